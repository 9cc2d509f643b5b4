"""The gate's sockets, made inside an egress VM's namespace and handed to the daemon.

A normal user's daemon cannot setns() into a namespace owned by a child user namespace (the
kernel wants CAP_SYS_ADMIN in its own namespace too), so a short child enters both with
nsenter, binds the resolver's UDP socket and the proxy's listener there, and passes them back
over a socketpair. A socket keeps the namespace it was made in.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass

from banger.errors import OperationFailed
from banger.net.egress.firewall import DNS_PORT, PROXY_PORT, nsenter_argv
from banger.runner import arun

_CHILD = """
import socket, sys
chan = socket.socket(fileno=int(sys.argv[1]))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", int(sys.argv[2])))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", int(sys.argv[3])))
tcp.listen(128)
socket.send_fds(chan, [b"ok"], [udp.fileno(), tcp.fileno()])
"""


@dataclass
class GateSockets:
    dns: socket.socket  # UDP, 127.0.0.1:53 in the namespace
    proxy: socket.socket  # TCP listener the host-alias redirect lands on

    def close(self) -> None:
        self.dns.close()
        self.proxy.close()


async def open_gate_sockets(pid: int) -> GateSockets:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        argv = nsenter_argv(pid, sys.executable, "-I", "-c", _CHILD, str(theirs.fileno()),
                            str(DNS_PORT), str(PROXY_PORT))
        await arun(argv, pass_fds=(theirs.fileno(),), timeout=20,
                   what="egress sockets in the VM's namespace")
        ours.setblocking(False)
        try:
            _, fds, _, _ = socket.recv_fds(ours, 16, 2)
        except BlockingIOError:
            fds = []
    if len(fds) != 2:
        for fd in fds:
            socket.close(fd)
        raise OperationFailed("the VM's egress gate got no sockets from its namespace")
    dns = socket.socket(fileno=fds[0])
    proxy = socket.socket(fileno=fds[1])
    for sock in (dns, proxy):
        sock.setblocking(False)
    return GateSockets(dns, proxy)


__all__ = ["GateSockets", "open_gate_sockets"]
