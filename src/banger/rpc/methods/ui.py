"""ui.* methods: the localhost web UI (docs/webui.md)."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, NoParams


class UiOpenResult(msgspec.Struct):
    url: str  # the login URL, with a one-time token
    base: str  # the UI's address, without a token
    token_ttl_s: float  # how long the token stays valid (it works once)


UI_OPEN = Method("ui.open", NoParams, "UiOpenResult",
                 "Serve the web UI if it is not served yet; a login URL with a fresh one-time token.")
