"""VM networking: tap (bridge, NAT) and QEMU user modes, addresses, forwards."""
