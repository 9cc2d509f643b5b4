"""Egress policy: a user-mode VM reaches only what its `--allow` rules name (docs/networking.md)."""
