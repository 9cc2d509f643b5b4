"""OCI/Docker image pulls: skopeo into a blob cache, layers flattened in Python, ext4 out."""

from banger.images.oci.ref import OciRef, looks_like_oci_ref, parse_ref

__all__ = ["OciRef", "looks_like_oci_ref", "parse_ref"]
