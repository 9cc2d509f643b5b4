"""RPC handlers, one module per area."""
