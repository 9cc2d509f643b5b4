"""`banger vm cp`: files and directories between the host and a guest, as tar streams.

`spec` parses the CLI's `VM:/path` arguments; `push` streams a tar made on the host into the
guest agent's `put`; `pull` extracts the guest's `get` tar through banger's one safe extractor
(`banger.archive`). See docs/cp.md.
"""
