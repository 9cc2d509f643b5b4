"""Zone files and bangerd-dns's answers: what a user's daemon writes, what the server trusts
(the owner from fstat, bounded sizes, valid names, IPv4 only) and the NAME.vm ambiguity rule."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
from pathlib import Path

import msgspec
import pytest
from dnslib import RCODE, DNSRecord

from banger.dns import zones
from banger.dns.publish import ZonePublisher
from banger.dns.server import answer_path
from banger.dns.zones import MAX_ENTRIES, MAX_FILE, Zones, parse_zone, write_zone
from tests.fakes.daemon import FakeDaemon, Progress, daemon_fixture
from tests.polling import until

UID = os.geteuid()
ME = zones.user_label(UID)


def scanned(directory: Path) -> Zones:
    z = Zones(directory, rescan_s=0)
    z.refresh(0)
    return z


def ask(z: Zones, name: str) -> DNSRecord:
    raw = answer_path(DNSRecord.question(name).pack(), z.lookup)
    assert raw is not None
    return DNSRecord.parse(raw)


def test_written_file_is_read_back_under_the_owners_name(tmp_path: Path) -> None:
    write_zone(tmp_path, UID, {"web": "127.81.232.2"})
    path = tmp_path / f"{UID}.json"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    z = scanned(tmp_path)
    assert pwd.getpwuid(UID).pw_name == ME
    assert z.lookup(["web"]) == "127.81.232.2" == z.lookup(["web", ME])
    assert [str(rr.rdata) for rr in ask(z, f"WEB.{ME}.vm").rr] == ["127.81.232.2"]
    assert ask(z, "nope.vm").header.rcode == RCODE.NXDOMAIN
    assert ask(z, "web.someone-else.vm").header.rcode == RCODE.NXDOMAIN
    assert ask(z, f"x.web.{ME}.vm").header.rcode == RCODE.NXDOMAIN


def test_another_members_files_cannot_crowd_out_real_ones(tmp_path: Path) -> None:
    """A group member fills the shared dir: dot files and `<n>.json` for uids not theirs."""
    for n in range(zones.MAX_FILES + 10):
        (tmp_path / f".a{n:05}").write_text("{}")
        if n != UID:
            (tmp_path / f"{n}.json").write_text('{"vms": {"web": "10.0.0.9"}}')
    write_zone(tmp_path, UID, {"web": "10.0.0.2"})
    z = scanned(tmp_path)
    assert z.lookup(["web", ME]) == "10.0.0.2" and z.lookup(["web"]) == "10.0.0.2"


def test_rewrites_are_seen_and_removal_forgets(tmp_path: Path) -> None:
    write_zone(tmp_path, UID, {"web": "127.81.232.2"})
    z = scanned(tmp_path)
    write_zone(tmp_path, UID, {"db": "10.77.0.3"})
    z.refresh(1)
    assert z.lookup(["web"]) is None and z.lookup(["db"]) == "10.77.0.3"
    zones.remove_zone(tmp_path, UID)
    z.refresh(2)
    assert z.by_user == {}


def test_a_file_not_named_after_its_owner_is_ignored(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    write_zone(tmp_path, UID, {"web": "127.81.232.2"})
    (tmp_path / f"{UID}.json").rename(tmp_path / f"{UID + 1}.json")  # claims another user's name
    (tmp_path / "notes.txt").write_text("{}")
    with caplog.at_level(logging.INFO, "banger.dns.zones"):
        z = scanned(tmp_path)
    assert z.by_user == {}
    assert caplog.text == ""  # skipped unread: a planted file must not flood the log either


def test_symlinks_and_directories_are_ignored(tmp_path: Path) -> None:
    elsewhere = tmp_path / "real"
    elsewhere.mkdir()
    write_zone(elsewhere, UID, {"web": "127.81.232.2"})
    zone = tmp_path / "zone"
    zone.mkdir()
    (zone / f"{UID}.json").symlink_to(elsewhere / f"{UID}.json")
    assert scanned(zone).by_user == {}
    (zone / f"{UID}.json").unlink()
    (zone / f"{UID}.json").mkdir()
    assert scanned(zone).by_user == {}


def test_fifo_does_not_block_the_server(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / f"{UID}.json")  # opening it would block without O_NONBLOCK
    assert scanned(tmp_path).by_user == {}


def test_oversized_garbage_and_too_many_entries_reject_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="over"):
        parse_zone(b" " * (MAX_FILE + 1))
    for garbage in (b"", b"{", b"[1,2]", b'{"vms": [1]}', b'{"vms": {"a": 1}}', b"\xff\xfe"):
        with pytest.raises(ValueError, match="not a zone file"):
            parse_zone(garbage)
    many = {f"vm{i}": "127.0.0.2" for i in range(MAX_ENTRIES + 1)}
    with pytest.raises(ValueError, match="entries"):
        parse_zone(msgspec.json.encode({"vms": many}))
    (tmp_path / f"{UID}.json").write_bytes(b"x" * (MAX_FILE + 10))
    assert scanned(tmp_path).by_user == {}


def test_bad_names_and_non_ipv4_addresses_are_dropped_one_by_one() -> None:
    data = (b'{"vms": {"web": "10.77.0.2", "Bad_Name": "10.77.0.3", "v6": "::1", '
            b'"-x": "10.0.0.1", "host": "example.com", "esc\\u001b": "10.0.0.2", '
            b'"big": "10.0.0.300"}, "other": 1}')
    assert parse_zone(data) == {"web": "10.77.0.2"}


def test_name_vm_needs_exactly_one_owner() -> None:
    z = Zones(Path("/nonexistent"))
    z.by_user = {"alice": {"web": "127.81.0.2", "same": "127.81.0.3"},
                 "bob": {"db": "127.82.0.2", "same": "127.82.0.3"}}
    assert z.lookup(["web"]) == "127.81.0.2" and z.lookup(["db"]) == "127.82.0.2"
    assert z.lookup(["same"]) is None
    assert z.lookup(["same", "alice"]) == "127.81.0.3"
    assert z.lookup(["same", "bob"]) == "127.82.0.3"
    assert z.lookup(["web", "bob"]) is None and z.lookup(["same", "carol"]) is None
    assert z.lookup(["web", "alice", "x"]) is None and z.lookup(["a b"]) is None


def test_two_uids_with_one_label_answer_under_neither() -> None:
    seen = {"1.json": zones._Seen((1, 0, 0, 0), "u7", {"a": "127.0.0.2"}),
            "2.json": zones._Seen((2, 0, 0, 0), "u7", {"b": "127.0.0.3"}),
            "3.json": zones._Seen((3, 0, 0, 0), "bob", {"c": "127.0.0.4"})}
    assert Zones._users(seen) == {"bob": {"c": "127.0.0.4"}}


def test_a_missing_zone_dir_answers_nothing(tmp_path: Path) -> None:
    z = scanned(tmp_path / "gone")
    assert z.lookup(["web"]) is None


def test_the_publisher_writes_after_changes_and_removes_at_close(tmp_path: Path) -> None:
    running = {"web": "127.81.232.2"}

    async def scenario() -> None:
        pub = ZonePublisher(tmp_path, lambda: dict(running), uid=UID)
        pub.start()
        path = tmp_path / f"{UID}.json"
        assert parse_zone(path.read_bytes()) == running
        running["db"] = "127.81.232.3"
        pub.changed()
        for _ in range(200):
            if parse_zone(path.read_bytes()) == running:
                break
            await asyncio.sleep(0.01)
        assert parse_zone(path.read_bytes()) == running
        pub.close()
        assert not path.exists()

    asyncio.run(scenario())


def test_bangerd_dns_refuses_root_and_bad_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    from banger.dns import zone_server

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit, match="refusing to run as root"):
        zone_server.main(["--zone-dir", "/nonexistent"])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match="is not HOST:PORT"):
        zone_server.main(["--listen", "nope"])


def test_bangerd_dns_answers_over_udp(tmp_path: Path) -> None:
    from banger.dns import zone_server

    write_zone(tmp_path, UID, {"web": "127.81.232.2"})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario() -> DNSRecord:
        server = asyncio.create_task(zone_server.run(f"127.0.0.1:{port}", tmp_path))
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.setblocking(False)
            await loop.sock_connect(c, ("127.0.0.1", port))
            for _ in range(100):  # until the server is bound
                await loop.sock_sendall(c, DNSRecord.question("web.vm").pack())
                try:
                    reply = await asyncio.wait_for(loop.sock_recv(c, 512), 0.05)
                    break
                except (TimeoutError, ConnectionRefusedError):
                    continue
        server.cancel()
        return DNSRecord.parse(reply)

    assert [str(rr.rdata) for rr in asyncio.run(scenario()).rr] == ["127.81.232.2"]


daemon = daemon_fixture(fast_start=False)


def test_the_daemons_zone_file_follows_create_stop_and_delete(daemon: FakeDaemon,
                                                              tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """The daemon's own wiring (dns.publish.start with the zone dir present) on the fake VMM."""
    from banger.dns.publish import start

    monkeypatch.setenv(zones.ZONE_DIR_ENV, str(tmp_path))
    path = tmp_path / f"{UID}.json"

    def published() -> dict[str, str]:
        return parse_zone(path.read_bytes()) if path.exists() else {}

    async def scenario() -> None:
        stop_dns = await start("127.0.0.1:1", daemon.vms.repo)  # no listener: the dir is there
        assert published() == {}
        vm = await daemon.create("web")
        await until(lambda: published() == {"web": str(vm.ip)}, "web in the zone file")
        await daemon.vms.stop("web", Progress())
        await until(lambda: published() == {}, "web gone once stopped")
        await daemon.vms.start("web", Progress())
        await until(lambda: published() == {"web": str(vm.ip)}, "web back once started")
        await daemon.vms.delete("web", force=True, progress=Progress())
        await until(lambda: published() == {}, "web gone once deleted")
        stop_dns()
        assert not path.exists()

    asyncio.run(scenario())
