"""In-process stand-ins for what unit tests cannot run: a VMM backend (backend.py)."""
