"""Names and digests are matched whole: `$` also matches before a trailing newline."""

from __future__ import annotations

import pytest

from banger.errors import InvalidArgument
from banger.images import catalog as image_catalog
from banger.images.manifest import decode_manifest
from banger.kernels import catalog as kernel_catalog
from banger.vms.model import validate_name
from banger.workspace.payload import ShipOptions


@pytest.mark.parametrize("check", [validate_name, image_catalog.validate_name,
                                   kernel_catalog.validate_name])
def test_a_trailing_newline_is_not_a_name(check: object) -> None:
    assert callable(check)
    check("web")
    with pytest.raises(InvalidArgument):
        check("web\n")


def test_a_manifest_sha256_with_a_newline_is_refused() -> None:
    sha = "a" * 64
    good = (b'{"name": "img", "distro": "debian", "arch": "x86_64", "kernel": "k", '
            b'"sha256": "%s", "size": 1, "built": "2026-12-02T00:00:00Z"}' % sha.encode())
    assert decode_manifest(good, "test").sha256 == sha
    with pytest.raises(InvalidArgument, match="sha256"):
        decode_manifest(good.replace(sha.encode(), sha.encode() + b"\\n"), "test")


def test_a_branch_name_with_a_newline_is_refused() -> None:
    from banger.workspace.payload import _check_branch

    assert ShipOptions(branch="feature").branch == "feature"
    with pytest.raises(InvalidArgument):
        _check_branch("feature\n")
