from pathlib import Path

import pytest

from banger.debian.mirror import resolve_mirror
from banger.errors import NotFound


def test_config_wins(tmp_path: Path) -> None:
    m = resolve_mirror("http://mirror.invalid/debian/", apt_root=tmp_path)
    assert m.url == "http://mirror.invalid/debian" and m.source == "config debian_mirror"


def test_deb822_sources_skip_security(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://sec.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb deb-src\nURIs: http://main.invalid/debian\nSuites: bookworm\n"
        "Components: main\n"
    )
    m = resolve_mirror("", apt_root=tmp_path)
    assert m.url == "http://main.invalid/debian"
    assert m.source.endswith("debian.sources")


def test_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://one.invalid/debian bookworm main\n"
    )
    assert resolve_mirror("", apt_root=tmp_path).url == "http://one.invalid/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="set debian_mirror"):
        resolve_mirror("", apt_root=tmp_path)
