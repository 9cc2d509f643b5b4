"""`banger mcp`: banger's tools for AI agents over the Model Context Protocol (docs/mcp.md).

Beside the CLI, on the same `banger.client` API: a tool is a few client calls, with every guest
output bounded and every failure one line.
"""
