"""OCI reference parsing, default image names and what counts as an OCI pull source."""

from __future__ import annotations

import pytest

from banger.errors import InvalidArgument
from banger.images.oci.ref import looks_like_oci_ref, parse_ref

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, canonical, name", [
    ("debian:bookworm", "docker.io/library/debian:bookworm", "debian-bookworm"),
    ("docker.io/library/debian:bookworm", "docker.io/library/debian:bookworm", "debian-bookworm"),
    ("alpine", "docker.io/library/alpine:latest", "alpine-latest"),
    ("127.0.0.1:5000/team/img:tag", "127.0.0.1:5000/team/img:tag", "img-tag"),
    ("localhost/x/y", "localhost/x/y:latest", "y-latest"),
    (f"debian@{DIGEST}", f"docker.io/library/debian@{DIGEST}", "debian-abababababab"),
    (f"quay.io/a/b:v1.2@{DIGEST}", f"quay.io/a/b:v1.2@{DIGEST}", "b-v1.2"),
    ("docker://ghcr.io/o/tool_x:V2", None, "tool_x-v2"),
])
def test_parse_and_default_name(text: str, canonical: str | None, name: str) -> None:
    ref = parse_ref(text)
    if canonical:
        assert ref.canonical == canonical
    assert ref.default_name() == name
    assert ref.transport == f"docker://{ref.canonical}"
    assert ":" not in ref.cache_tag() and "/" not in ref.cache_tag()


@pytest.mark.parametrize("text", ["", "a b", "debian@sha256:12", "UPPER/case", "x:bad tag",
                                  "reg:5000/x:y:z"])
def test_bad_refs(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_ref(text)


def test_what_is_an_oci_source() -> None:
    names = ["debian-bookworm", "debian-bookworm-slim"]
    assert looks_like_oci_ref("debian:bookworm", names)
    assert looks_like_oci_ref("reg:5000/team/img:tag", names)
    assert looks_like_oci_ref(f"debian@{DIGEST}", names)
    for not_oci in ("debian-bookworm", "/tmp/x.tar.zst", "https://x/y.tar.zst", "file:///x",
                    "./b.tar.zst", "alpine"):
        assert not looks_like_oci_ref(not_oci, names)
