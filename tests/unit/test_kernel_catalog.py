"""The packaged kernel catalog and name lookups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from banger.errors import InvalidArgument, NotFound
from banger.kernels.catalog import default_entry, load_catalog, lookup, validate_name


def test_default_entry_is_debian_cloud() -> None:
    entry = default_entry()
    assert entry.name == "debian-bookworm-cloud"
    assert (entry.kind, entry.suite, entry.metapackage) == (
        "debian", "bookworm", "linux-image-cloud-amd64")


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(NotFound, match="did you mean debian-bookworm-cloud"):
        lookup("debian-bookworm-clod")
    with pytest.raises(NotFound, match="known: debian-bookworm-cloud"):
        lookup("zzz")


def write(tmp_path: Path, kernels: list[dict[str, str]], default: str = "k") -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"version": 1, "default": default, "kernels": kernels}))
    return path


def test_bundle_entries_need_url_and_sha256(tmp_path: Path) -> None:
    ok = {"name": "k", "kind": "bundle", "url": "file:///x.tar.zst", "sha256": "a" * 64}
    assert load_catalog(write(tmp_path, [ok])).kernels[0].sha256 == "a" * 64
    with pytest.raises(InvalidArgument, match="needs url and a sha256"):
        load_catalog(write(tmp_path, [{**ok, "sha256": "short"}]))


def test_bad_catalogs(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="default kernel"):
        load_catalog(write(tmp_path, [], default="nope"))
    with pytest.raises(InvalidArgument, match="invalid"):
        load_catalog(write(tmp_path, [{"name": "k", "kind": "weird"}]))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        load_catalog(tmp_path / "bad.json")


@pytest.mark.parametrize("name", ["../x", "A", "", "a/b", ".hidden"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_name(name)
