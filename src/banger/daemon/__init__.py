"""bangerd: the daemon that owns all state."""
