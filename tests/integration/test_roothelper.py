"""bangerd-root as root, against a helper process in a network namespace this file creates.

Callers are separate processes with chosen uids and groups (subprocess drops privileges in the
child), talking raw JSON to the socket as any local program could. Network rule: the bridge,
taps and NAT rules exist only inside the test's namespace, which is deleted at the end.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SYS_PY = "/usr/bin/python3"  # readable by every uid (the venv's interpreter may not be)
USER = 1001  # a uid with or without an account: the helper trusts uids, not names
OTHER = 1002  # any other uid: no account is needed to hold a uid
CIDR = "10.77.0.0/24"
VM_ID = "0123456789ab"
TAP = f"bt{VM_ID}"
PIN = {"ip": "10.77.0.2", "mac": "52:54:00:12:34:56"}  # the VM's address and MAC

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path(SYS_PY).exists(),
                                reason="the root helper's tests run as root")

CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.stdin.buffer.read())
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.buffer.write(data)
"""


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True)


@dataclass
class Helper:
    netns: str
    socket: Path
    log: Path
    gid: int
    bridge: str

    def call(self, request: object, *, uid: int = 0, member: bool = True,
             raw: bytes | None = None) -> dict[str, object]:
        """One request as uid (in the helper's group when member); the reply as JSON."""
        data = raw if raw is not None else json.dumps(request).encode()
        res = self.run_client(data, uid=uid, member=member)
        assert res.returncode == 0, res.stderr.decode()
        reply: dict[str, object] = json.loads(res.stdout)
        return reply

    def run_client(self, data: bytes, *, uid: int, member: bool) -> subprocess.CompletedProcess[bytes]:
        groups = [self.gid] if member else []
        return subprocess.run([SYS_PY, "-c", CLIENT, str(self.socket)], input=data,
                              capture_output=True, timeout=30, user=uid, group=65534 if uid else 0,
                              extra_groups=groups)

    def link(self, name: str) -> dict[str, object] | None:
        res = subprocess.run(["ip", "-n", self.netns, "-d", "-j", "link", "show", "dev", name],
                             capture_output=True, text=True)
        found: list[dict[str, object]] = json.loads(res.stdout) if res.returncode == 0 else []
        return found[0] if found else None

    def nat_comments(self) -> list[str]:
        out = sh("ip", "netns", "exec", self.netns, "nft", "-j", "list", "ruleset").stdout
        items = json.loads(out)["nftables"]
        return [str(i["rule"].get("comment")) for i in items if "rule" in i]


def refused(reply: dict[str, object], text: str) -> str:
    assert reply.get("ok") is False, reply
    message = str(reply["error"]["message"])  # type: ignore[index]
    assert text in message and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def group() -> Iterator[tuple[str, int]]:
    name = f"bgt{secrets.token_hex(3)}"
    sh("groupadd", name)
    try:
        yield name, int(sh("getent", "group", name).stdout.split(":")[2])
    finally:
        subprocess.run(["groupdel", name], check=False)


@pytest.fixture
def helper(group: tuple[str, int]) -> Iterator[Helper]:
    netns = f"bgh{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="bangerd-root-"))
    work.chmod(0o755)  # other uids must reach the socket
    bridge = "br-bgtest"
    (work / "root.toml").write_text(f'bridge_name = "{bridge}"\nbridge_cidr = "{CIDR}"\n'
                                    f'group = "{group[0]}"\n')
    sh("ip", "netns", "add", netns)
    log = work / "helper.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, str(BIN / "bangerd-root"),
                                 "--socket", str(work / "root.sock"), "--config",
                                 str(work / "root.toml")], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (work / "root.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Helper(netns, work / "root.sock", log, group[1], bridge)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(work)


def account_or_uid(uid: int) -> str | int:
    """What `ip -j link` shows as a tap's owner: the account name, or the bare uid."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid


def test_happy_path_tap_owned_by_the_caller_nat_and_cleanup(helper: Helper) -> None:
    assert helper.call({"op": "info"}, uid=USER) == {
        "ok": True, "error": None, "bridge": helper.bridge, "cidr": CIDR, "existed": False,
        "denied": []}
    assert helper.call({"op": "bridge_up"}, uid=USER)["ok"] is True
    bridge = helper.link(helper.bridge)
    assert bridge is not None and "UP" in bridge["flags"]  # type: ignore[operator]
    assert helper.call({"op": "tap_add", "name": TAP, **PIN}, uid=USER)["ok"] is True
    tap = helper.link(TAP)
    assert tap is not None and tap["master"] == helper.bridge
    assert tap["linkinfo"]["info_data"]["user"] == account_or_uid(USER)  # type: ignore[index]
    assert helper.call({"op": "nat_enable", "vm_id": VM_ID, "ip": "10.77.0.2"}, uid=USER)["ok"]
    assert helper.nat_comments().count(f"banger:{VM_ID}:{USER}") == 3
    assert helper.call({"op": "nat_disable", "vm_id": VM_ID}, uid=USER)["ok"] is True
    assert f"banger:{VM_ID}:{USER}" not in helper.nat_comments()
    assert helper.call({"op": "tap_delete", "name": TAP}, uid=USER)["existed"] is True
    assert helper.link(TAP) is None
    assert helper.call({"op": "tap_delete", "name": TAP}, uid=USER)["existed"] is False
    assert f"uid {USER} pid" in helper.log.read_text()


@pytest.mark.parametrize("request_, why", [
    ({"op": "tap_add", "name": "eth0", **PIN}, "is not a banger tap name"),
    ({"op": "tap_delete", "name": "lo"}, "is not a banger tap name"),
    ({"op": "tap_delete", "name": "br-bgtest"}, "is not a banger tap name"),
    ({"op": "tap_add", "name": "bt../../../etc", **PIN}, "is not a banger tap name"),
    ({"op": "tap_add", "name": "bt0123456789a/", **PIN}, "is not a banger tap name"),
    ({"op": "tap_add", "name": "bt0123456789a\n", **PIN}, "is not a banger tap name"),
    ({"op": "tap_add", "name": "bt0123456789ab\u202e", **PIN}, "is not a banger tap name"),
    ({"op": "nat_enable", "vm_id": VM_ID, "ip": "10.78.0.2"}, "not a VM address in banger's"),
    ({"op": "nat_enable", "vm_id": VM_ID, "ip": "192.168.1.1"}, "not a VM address in banger's"),
    ({"op": "nat_enable", "vm_id": VM_ID, "ip": "10.77.0.1"}, "not a VM address in banger's"),
    ({"op": "nat_enable", "vm_id": "../x", "ip": "10.77.0.2"}, "is not a banger VM id"),
    ({"op": "bridge_up", "name": "eth0"}, "unknown field `name`"),
    ({"op": "bridge_up", "cidr": "192.168.0.0/16"}, "unknown field `cidr`"),
    ({"op": "exec", "argv": ["sh", "-c", "id"]}, "Invalid value 'exec'"),
])
def test_each_refusal_is_one_line_logged_and_changes_nothing(helper: Helper, request_: object,
                                                             why: str) -> None:
    message = refused(helper.call(request_, uid=USER), why)
    assert message in helper.log.read_text()
    links = sh("ip", "-n", helper.netns, "-o", "link").stdout
    assert "br-bgtest" not in links and "eth0" not in links and "bt" not in links
    assert "table inet banger" not in sh("ip", "netns", "exec", helper.netns, "nft",
                                          "list", "ruleset").stdout


def test_oversized_and_malformed_requests_are_refused(helper: Helper) -> None:
    big = b'{"op": "info", "pad": "' + b"x" * ((1 << 20) + 100) + b'"}'
    refused(helper.call(None, uid=USER, raw=big), f"larger than {1 << 20} bytes")
    refused(helper.call(None, uid=USER, raw=b"\xff\xfe{not json"), "malformed request")
    refused(helper.call(None, uid=USER, raw=b""), "malformed request")
    log = helper.log.read_text()
    assert f"larger than {1 << 20} bytes" in log and log.count("malformed request") == 2


def test_a_caller_outside_the_group_is_refused(helper: Helper) -> None:
    # The socket's mode (0660, root and the group) stops it first ...
    res = helper.run_client(b'{"op": "info"}', uid=USER, member=False)
    assert res.returncode != 0 and b"PermissionError" in res.stderr
    # ... and the helper's own SO_PEERCRED check stops it when the file mode would not.
    helper.socket.chmod(0o666)
    message = refused(helper.call({"op": "bridge_up"}, uid=USER, member=False),
                      f"uid {USER} is not in group")
    assert message in helper.log.read_text()
    assert helper.link(helper.bridge) is None


def test_nobody_may_change_a_tap_owned_by_someone_else(helper: Helper) -> None:
    assert helper.call({"op": "bridge_up"}, uid=USER)["ok"] is True
    assert helper.call({"op": "tap_add", "name": TAP, **PIN}, uid=USER)["ok"] is True
    assert helper.call({"op": "nat_enable", "vm_id": VM_ID, "ip": "10.77.0.2"}, uid=USER)["ok"]
    refused(helper.call({"op": "tap_delete", "name": TAP}, uid=OTHER),
            f"tap {TAP} belongs to uid {USER}, not you")
    refused(helper.call({"op": "tap_add", "name": TAP, **PIN}, uid=OTHER), f"belongs to uid {USER}")
    assert helper.call({"op": "nat_disable", "vm_id": VM_ID}, uid=OTHER)["ok"] is True
    assert helper.link(TAP) is not None  # still there, still USER's, still NATed
    assert helper.nat_comments().count(f"banger:{VM_ID}:{USER}") == 3
    assert "belongs to uid 1001, not you" in helper.log.read_text()
    assert helper.call({"op": "tap_delete", "name": TAP}, uid=0)["existed"] is True  # root may


def test_nobody_may_rule_over_another_users_vm_address(helper: Helper) -> None:
    """Rules name a VM by its address: only the uid whose tap is pinned to it may make them
    (another group member once inserted NAT or egress rules above the owner's)."""
    assert helper.call({"op": "bridge_up"}, uid=USER)["ok"] is True
    assert helper.call({"op": "tap_add", "name": TAP, **PIN}, uid=USER)["ok"] is True
    theirs = "0123456789ff"  # an id with no tap at all
    refused(helper.call({"op": "nat_enable", "vm_id": theirs, "ip": PIN["ip"]}, uid=OTHER),
            "is not the address of your tap")
    sets = {"pairs": [], "every": ["93.184.216.34"], "networks": [], "host_ports": []}
    refused(helper.call({"op": "egress_enable", "vm_id": theirs, "ip": PIN["ip"],
                         "resolver_port": 40000, "proxy_port": 40001, "sets": sets}, uid=OTHER),
            "is not the address of your tap")
    refused(helper.call({"op": "tap_add", "name": "bt0123456789ff", **PIN}, uid=OTHER),
            "belongs to another VM's tap")
    assert helper.link("bt0123456789ff") is None
    refused(helper.call({"op": "nat_enable", "vm_id": VM_ID, "ip": PIN["ip"]}, uid=OTHER),
            "is not the address of your tap")
    assert helper.call({"op": "nat_enable", "vm_id": VM_ID, "ip": PIN["ip"]}, uid=USER)["ok"]
    rules = sh("ip", "netns", "exec", helper.netns, "nft", "list", "table", "bridge",
               "banger").stdout
    for pinned in ("ether saddr != 52:54:00:12:34:56", "ether type != { ip, arp }",
                   "ip saddr != 10.77.0.2", "arp saddr ip != 10.77.0.2"):
        assert pinned in rules, rules
    assert helper.call({"op": "tap_delete", "name": TAP}, uid=USER)["existed"] is True
    assert "10.77.0.2" not in sh("ip", "netns", "exec", helper.netns, "nft", "list", "table",
                                 "bridge", "banger").stdout  # the pin goes with its tap


def test_the_daemon_side_client_speaks_to_it(helper: Helper) -> None:
    """HelperClient (what a daemon without CAP_NET_ADMIN uses), here as root."""
    import asyncio

    from banger.errors import InvalidArgument
    from banger.net.privileged import HelperClient

    client = HelperClient(helper.socket)
    assert client.bridge().cidr == CIDR

    async def steps() -> None:
        await client.bridge_up()
        await client.tap_add(TAP, PIN["ip"], PIN["mac"])
        with pytest.raises(InvalidArgument, match="not a VM address"):
            await client.nat_enable(VM_ID, "10.1.0.2")
        assert await client.tap_delete(TAP) is True

    asyncio.run(steps())
    assert helper.link(TAP) is None
