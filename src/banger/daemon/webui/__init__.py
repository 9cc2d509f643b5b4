"""banger's localhost web UI: Starlette + Jinja2 served by uvicorn inside the daemon's loop.

A front end on the daemon's state beside the RPC handlers (`vms`, the operations history); it
listens on loopback only and admits a browser through a one-time token (see docs/webui.md).
"""
