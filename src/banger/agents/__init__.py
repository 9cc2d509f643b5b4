"""Coding agents for guests: the catalog, pulls from the npm registry npm is configured with
(verified, cached), and shipping into a VM. Unrelated to `banger.agent` (the guest agent)."""
