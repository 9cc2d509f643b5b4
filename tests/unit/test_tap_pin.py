"""A tap speaks only as its VM: the bridge rules net/tappin.py loads, against frames a hostile
guest crafts (another address, another MAC, an 802.1Q priority tag that hid frames from
ethertype rules). Runs in a throwaway user + network namespace: a bridge, a veth as the tap, the
"guest" end in a nested namespace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from banger.runner import run, which

NS = ["unshare", "--user", "--map-root-user", "--net", "--mount"]
MAC = "52:54:00:00:00:02"
TAP = "bt000000000001"

# Sends one ARP request (optionally VLAN-tagged, from any address and MAC) and one TCP SYN to
# the gateway's listener; prints whether each was answered.
CRAFT = r"""
import socket, struct, sys, time
tag = None if sys.argv[1] == "none" else int(sys.argv[1])
sip, smac = sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0)); s.settimeout(0.2)
def csum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xffff)
    return ~(t + (t >> 16)) & 0xffff
def frame(dst, kind, payload):
    vlan = struct.pack("!HH", 0x8100, tag) if tag is not None else b""
    return dst + smac + vlan + struct.pack("!H", kind) + payload
def answer(test):
    end = time.time() + 1.5
    while time.time() < end:
        try: f = s.recv(2000)
        except socket.timeout: continue
        off = 16 if f[12:14] == b"\x81\x00" else 12
        found = test(f, off)
        if found: return found
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x800, 6, 4, 1, smac, socket.inet_aton(sip), b"\0" * 6,
                  socket.inet_aton("10.77.0.1"))
s.send(frame(b"\xff" * 6, 0x806, arp))
gw = answer(lambda f, o: f[6:12] if f[o:o + 2] == b"\x08\x06" and f[o + 8:o + 10] == b"\0\2"
            and f[o + 26:o + 30] == socket.inet_aton(sip) else None)
print("arp", "answered" if gw else "silent")
gw = gw or bytes.fromhex(sys.argv[4].replace(":", ""))
tcp = struct.pack("!HHIIBBHHH", 40000, 8080, 1, 0, 0x50, 2, 65535, 0, 0)
pseudo = socket.inet_aton(sip) + socket.inet_aton("10.77.0.1") + struct.pack("!BBH", 0, 6, 20)
tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, socket.inet_aton(sip),
                 socket.inet_aton("10.77.0.1"))
s.send(frame(gw, 0x800, ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + tcp))
print("syn", "answered" if answer(lambda f, o: f[o + 2 + 16:o + 2 + 20] == socket.inet_aton(sip)
                                  and f[o + 2 + 9] == 6) else "silent")
"""

LAB = """set -e
mount -t tmpfs none /run; mkdir -p /run/netns; ip link set lo up
ip netns add vm
ip link add br0 type bridge; ip addr add 10.77.0.1/24 dev br0; ip link set br0 up
ip link add {tap} type veth peer name eth0 netns vm
ip link set {tap} master br0 up
ip -n vm link set eth0 address {mac}; ip -n vm link set lo up
ip -n vm addr add 10.77.0.2/24 dev eth0; ip -n vm link set eth0 up
{py} -c 'import socket, time; s = socket.create_server(("10.77.0.1", 8080)); time.sleep(30)' \
  >/dev/null 2>&1 &
trap "kill $!" EXIT
{py} -c 'import asyncio; from banger.net.tappin import pin
asyncio.run(pin("", "{tap}", "10.77.0.2", "{mac}", 1000))'
gw=$(ip -br link show br0 | awk '{{print $3}}')
for case in {cases}; do
  set -- $(echo $case | tr , ' '); echo "== $*"; ip netns exec vm {py} {craft} $1 $2 $3 $gw
done
echo "== counters"; nft -j list table bridge banger
"""


def _can_unshare() -> bool:
    return all(which(t) for t in ("nft", "unshare", "ip")) and run(
        [*NS, "true"], check=False, timeout=10).ok


@pytest.mark.skipif(not _can_unshare(), reason="needs nft, ip and user namespaces")
def test_a_tap_cannot_speak_as_another_address_mac_or_through_vlan_tags(tmp_path: Path) -> None:
    (tmp_path / "craft.py").write_text(CRAFT)
    cases = [("none", "10.77.0.2", MAC),  # itself: answered (the lab works)
             ("none", "10.77.0.50", MAC),  # another address
             ("0", "10.77.0.50", MAC),  # the same behind a priority tag
             ("0", "10.77.0.2", MAC),  # its own address, tagged
             ("none", "10.77.0.2", "52:54:00:00:00:99")]  # another VM's MAC
    script = LAB.format(tap=TAP, mac=MAC, py=sys.executable, craft=tmp_path / "craft.py",
                        cases=" ".join(",".join(c) for c in cases))
    out = run([*NS, "sh", "-c", script], check=False, timeout=120)
    lines = out.stdout.splitlines()
    results = [line for line in lines[:-1] if not line.startswith("==")]
    assert results[:2] == ["arp answered", "syn answered"], out.stdout + out.stderr
    assert results[2:] == ["arp silent", "syn silent"] * 4, out.stdout + out.stderr
    dropped = {}  # what each pin rule dropped: the frames were stopped by the pin, not lost
    for item in json.loads(lines[-1])["nftables"]:
        rule = item.get("rule")
        if rule:
            match = json.dumps(rule["expr"][1])
            dropped[match] = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    assert len(dropped) == 5 and sum(1 for n in dropped.values() if n > 0) >= 4, dropped
