"""`system install`'s .vm part without root: the files it renders, which resolver it picks,
and uninstall removing only files still as written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from banger.roothelper import dns_unit, resolver
from banger.roothelper.written import Written, digest, remove_unchanged, write


def at(root: Path) -> Callable[[str], Path]:
    return lambda path: root / path.lstrip("/")


def test_rendered_files() -> None:
    assert resolver.render_resolved().splitlines()[1:] == [
        "[Resolve]", "DNS=127.0.0.1:42069", "Domains=~vm"]
    assert resolver.render_dnsmasq().splitlines()[-1] == "server=/vm/127.0.0.1#42069"
    unit = dns_unit.service_unit(Path("/opt/banger/bin/bangerd-dns")).splitlines()
    assert ("ExecStart=/opt/banger/bin/bangerd-dns --listen 127.0.0.1:42069 --zone-dir "
            "/run/banger/zone") in unit
    assert "DynamicUser=yes" in unit and "CapabilityBoundingSet=" in unit
    assert dns_unit.tmpfiles_conf("banger").splitlines()[1:] == [
        "d /run/banger 0755 root root -", "d /run/banger/zone 1775 root banger -"]
    assert "runuser -u nobody -- /x/bangerd-dns --listen 127.0.0.1:42069 --zone-dir " \
           "/run/banger/zone &" in dns_unit.manual_start(Path("/x/bangerd-dns"))


def test_resolver_detection(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0\n")
    found = resolver.detect(at(tmp_path), {"systemd-resolved", "sshd"})
    assert found is not None and found.path == resolver.RESOLVED_DROPIN
    assert found.reload == ("reload-or-restart", "systemd-resolved")
    assert resolver.detect(at(tmp_path), {"sshd"}) is None  # the stub address, nothing behind it
    (etc / "resolv.conf").write_text("nameserver 127.0.1.1\n")
    assert resolver.detect(at(tmp_path), {"dnsmasq"}) is None  # no config dir to drop a file in
    (etc / "dnsmasq.d").mkdir()
    found = resolver.detect(at(tmp_path), {"dnsmasq"})
    assert found is not None and found.path == resolver.DNSMASQ_CONF
    (etc / "NetworkManager" / "dnsmasq.d").mkdir(parents=True)
    found = resolver.detect(at(tmp_path), {"dnsmasq", "NetworkManager"})
    assert found is not None and found.path == resolver.NM_DNSMASQ_CONF
    (etc / "resolv.conf").write_text("nameserver 192.168.1.1\n")
    assert resolver.detect(at(tmp_path), {"dnsmasq", "NetworkManager"}) is None  # not the resolver
    assert "127.0.0.1:42069" in resolver.manual_hint()


def test_a_resolved_symlinked_resolv_conf_counts(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    found = resolver.detect(at(tmp_path), {"systemd-resolved"})
    assert found is not None and found.name == "systemd-resolved"


def test_uninstall_keeps_a_changed_file_and_removes_the_rest(tmp_path: Path) -> None:
    files: list[Written] = []
    kept, gone = tmp_path / "a" / "kept.conf", tmp_path / "b" / "gone.conf"
    assert write(files, kept, "one\n", "tmpfiles") == f"wrote {kept}"
    assert write(files, gone, "two\n", "resolver") == f"wrote {gone}"
    assert files[0].sha256 == digest(b"one\n") and files[0].made_dir == str(kept.parent)
    assert write(files, gone, "two\n", "resolver") == f"kept {gone}" and len(files) == 2
    kept.write_text("one\n# an admin's line\n")
    said = remove_unchanged(files)
    assert said[0].startswith(f"kept {kept}: changed since") and said[1] == f"removed {gone}"
    assert kept.exists() and not gone.exists() and not gone.parent.exists()


def test_install_leaves_someone_elses_file_alone(tmp_path: Path) -> None:
    files: list[Written] = []
    theirs = tmp_path / "banger.conf"
    theirs.write_text("server=/vm/10.0.0.1\n")
    said = write(files, theirs, "server=/vm/127.0.0.1#42069\n", "resolver")
    assert said.startswith(f"left {theirs} alone") and "127.0.0.1#42069" in said
    assert files == [] and theirs.read_text() == "server=/vm/10.0.0.1\n"
    # a file banger wrote and nobody changed since is updated in place
    mine = tmp_path / "mine.conf"
    write(files, mine, "v1\n", "tmpfiles")
    assert write(files, mine, "v2\n", "tmpfiles") == f"wrote {mine}"
    assert [w.sha256 for w in files] == [digest(b"v2\n")]


def test_a_users_process_named_dnsmasq_is_not_a_resolver(tmp_path: Path) -> None:
    """Any user can call a process `dnsmasq`; install must not wire (and restart) one for it."""
    if os.geteuid() != 0:
        pytest.skip("making a process entry owned by another uid needs root")
    for pid, uid, comm in (("10", 1002, "dnsmasq"), ("11", 0, "sshd"), ("12", 101, "resolvd"),
                           ("13", 65534, "nobodyd")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "comm").write_text(comm + "\n")
        os.chown(tmp_path / pid, uid, uid)
    assert resolver.running_programs(tmp_path) == {"sshd", "resolvd", "nobodyd"}
