import json

import pytest

from banger.errors import InvalidArgument, NotFound
from banger.images.catalog import (
    BundleEntry,
    OciEntry,
    RecipeEntry,
    load_catalog,
    lookup,
    parse_catalog,
    validate_name,
)

SHA = "ab" * 32


def test_packaged_catalog_defaults() -> None:
    cat = load_catalog()
    assert cat.default == "debian-bookworm"
    default = cat.get("debian-bookworm")
    assert isinstance(default, RecipeEntry) and default.systemd
    for pkg in ("systemd", "openssh-server", "python3", "docker.io", "build-essential", "less"):
        assert pkg in default.packages
    assert default.kernel == "debian-bookworm-cloud"


def test_slim_has_no_systemd() -> None:
    slim = lookup("debian-bookworm-slim")
    assert isinstance(slim, RecipeEntry)
    assert not slim.systemd and "systemd" not in slim.packages
    assert {"python3", "iproute2", "git", "ca-certificates"} <= set(slim.packages)


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(NotFound, match="did you mean debian-bookworm"):
        lookup("debian-bookwrm")


def test_unknown_far_name_points_at_catalog() -> None:
    with pytest.raises(NotFound, match="banger image catalog"):
        lookup("alpine")


def _cat(*images: dict[str, object], default: str = "a") -> bytes:
    return json.dumps({"version": 1, "default": default, "images": list(images)}).encode()


def test_bundle_and_oci_entries_parse() -> None:
    cat = parse_catalog(_cat(
        {"kind": "bundle", "name": "a", "url": "http://127.0.0.1/a.tar.zst", "sha256": SHA},
        {"kind": "oci", "name": "b", "ref": "docker.io/library/debian:bookworm"},
    ))
    assert isinstance(cat.get("a"), BundleEntry)
    assert isinstance(cat.get("b"), OciEntry)


@pytest.mark.parametrize(
    "data",
    [
        _cat({"kind": "bundle", "name": "a", "url": "u", "sha256": "nothex"}),
        _cat({"kind": "recipe", "name": "a"}, {"kind": "recipe", "name": "a"}),
        _cat({"kind": "recipe", "name": "a"}, default="zz"),
        _cat({"kind": "tarball", "name": "a"}),
        _cat({"kind": "recipe", "name": "Bad Name"}, default="Bad Name"),
        b"{not json",
    ],
)
def test_bad_catalogs_are_one_line_errors(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_catalog(data)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["", "-x", "UPPER", "a/b", "..", "a" * 64])
def test_bad_image_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_name(name)
