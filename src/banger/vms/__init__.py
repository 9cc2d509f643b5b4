"""VMs: records, naming rules, lifecycle."""
