"""CLI <-> daemon RPC: newline-delimited JSON over a Unix socket, one request per connection."""
