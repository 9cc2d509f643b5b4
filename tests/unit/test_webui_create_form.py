"""The web UI's create form checks its fields like the CLI's options, egress rules included."""

from __future__ import annotations

import pytest

from banger.daemon.webui.forms import parse_create
from banger.errors import InvalidArgument


def test_allowed_destinations_become_the_vms_rules() -> None:
    form = parse_create({"image": "slim", "allow": " idx.test:443, host.banger.internal:8000 "},
                        ["slim"])
    assert form.request.allow == ["idx.test:443", "host.banger.internal:8000"]
    assert parse_create({"image": "slim"}, ["slim"]).request.allow is None  # config default


def test_a_bad_rule_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_create({"image": "slim", "allow": "127.0.0.1:80"}, ["slim"])
    assert "host.banger.internal" in info.value.message and "\n" not in info.value.message
