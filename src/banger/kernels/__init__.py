"""Guest kernels: the catalog, pulls (Debian package or bundle), manifests on disk."""
