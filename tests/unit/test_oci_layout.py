"""The OCI cache's JSON (index, manifests, configs) comes from a registry: bounded and typed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from banger.errors import OperationFailed
from banger.images.oci import layout


def put_blob(root: Path, data: bytes) -> str:
    hexdigest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / hexdigest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{hexdigest}"


def tagged(root: Path, manifest: object) -> str:
    digest = put_blob(root, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [
        {"digest": digest, "size": 1, "annotations": {layout.REF_ANNOTATION: "t"}}]}
    (root / "index.json").write_text(json.dumps(index))
    return digest


def test_a_well_formed_image_loads(tmp_path: Path) -> None:
    config = put_blob(tmp_path, b'{"config": {"Env": ["A=1"]}}')
    layer = put_blob(tmp_path, b"layer bytes")
    digest = tagged(tmp_path, {"config": {"digest": config}, "layers": [
        {"digest": layer, "size": 11, "mediaType": "application/vnd.oci.image.layer.v1.tar"}]})
    assert layout.find_manifest(tmp_path, "t") == digest
    image = layout.load_image(tmp_path, digest)
    assert image.config["config"]["Env"] == ["A=1"] and image.layers[0].size == 11
    assert layout.referenced_blobs(tmp_path) == {digest, config, layer}


@pytest.mark.parametrize("manifest", [
    {"config": "sha256:abc", "layers": []},  # was a TypeError: an internal error
    {"config": {"digest": "sha256:" + "a" * 64}, "layers": [{"size": 1}]},  # was a KeyError
    {"config": {"digest": "sha256:" + "a" * 64 + "\n"}, "layers": []},
    {"config": {"digest": "sha256:" + "a" * 64}, "layers": [{"digest": "../../x"}]},
    {"config": {"digest": "sha256:" + "a" * 64}, "layers": [{"digest": "sha256:" + "b" * 64,
                                                             "size": -1}]},
    {"config": {"digest": "sha256:" + "a" * 64}, "layers": "nope"},
])
def test_a_hostile_manifest_is_one_clear_error(tmp_path: Path, manifest: object) -> None:
    digest = tagged(tmp_path, manifest)
    with pytest.raises(OperationFailed, match=r"OCI .* invalid"):
        layout.load_image(tmp_path, digest)


def test_oversized_and_deep_documents_are_refused(tmp_path: Path) -> None:
    big = put_blob(tmp_path, b'{"layers": [' + b" " * (layout.MAX_DOCUMENT + 1) + b"]}")
    with pytest.raises(OperationFailed, match="larger than 4 MiB"):
        layout.load_image(tmp_path, big)
    deep = put_blob(tmp_path, b'{"annotations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(OperationFailed, match="invalid"):
        layout.load_image(tmp_path, deep)
