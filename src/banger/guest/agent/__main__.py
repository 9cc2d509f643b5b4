"""`python3 -m agent` in the guest (`python3 -m banger.guest.agent` on a host)."""

import sys

from .server import main

sys.exit(main(sys.argv[1:]))
