"""ssh into VMs: banger's key, its own known_hosts (trust on first use), ~/.ssh/config Include."""
