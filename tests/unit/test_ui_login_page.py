"""`banger ui` hands the browser a private file, never the token URL (argv is world-readable)."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from banger.cli import session, ui_cmds


def test_login_page_is_private_and_carries_the_url(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "paths", lambda: SimpleNamespace(runtime_dir=tmp_path))
    url = 'http://127.0.0.1:7777/login?token=abc&x="<b>'
    page = ui_cmds.login_page(url)
    assert page.parent == tmp_path and stat.S_IMODE(page.stat().st_mode) == 0o600
    text = page.read_text()
    assert "token=abc&amp;x=&quot;&lt;b&gt;" in text and url not in text
    assert page.as_uri().startswith("file://") and "token" not in page.as_uri()


def test_a_planted_symlink_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "paths", lambda: SimpleNamespace(runtime_dir=tmp_path))
    (tmp_path / "ui-login.html").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        ui_cmds.login_page("http://127.0.0.1:7777/login?token=t")
    assert not (tmp_path / "elsewhere").exists()
