"""Checks for running banger as a normal user: who the daemon runs as, subordinate ids,
user namespaces, newuidmap and /dev/kvm access (see docs/privileges.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from banger.config import Config
from banger.doctor.check import Check
from banger.paths import Paths
from banger.textsafe import one_line
from banger.userns import (
    NEEDED_IDS,
    SUBGID,
    SUBUID,
    current_user,
    free_subordinate_start,
    has_enough_ids,
    namespaces_work,
    newuidmap_found,
    subordinate_ranges,
    unprivileged,
)
from banger.vmm.accel import kvm_access_fix, probe_kvm

AS_ROOT_FIX = "run banger as a normal user; only tap networking needs root"


def running_user(paths: Paths, config: Config) -> Iterator[Check]:
    """The CLI starts its daemon as itself: root here means a root daemon."""
    if unprivileged():
        yield Check("daemon user", "PASS", f"uid {os.geteuid()}, no privileges")
    else:
        yield Check("daemon user", "WARN", "the daemon runs as root: a guest escape or a daemon "
                    "bug would be root on this host", AS_ROOT_FIX)


def subordinate_ids(paths: Paths, config: Config, subuid: Path = SUBUID,
                    subgid: Path = SUBGID) -> Iterator[Check]:
    """mmdebstrap's unshare mode maps Debian's system ids onto the user's subordinate ids."""
    if not unprivileged():
        yield Check("subordinate ids", "PASS", "not needed as root")
        return
    user, uid = current_user(), os.getuid()
    missing = [str(t) for t in (subuid, subgid)
               if not has_enough_ids(subordinate_ranges(t, user, uid))]
    if not missing:
        yield Check("subordinate ids", "PASS", f"{user} has {NEEDED_IDS} ids in {subuid} "
                    f"and {subgid}")
        return
    start = free_subordinate_start(subuid, subgid)
    span = f"{start}-{start + NEEDED_IDS - 1}"
    yield Check("subordinate ids", "FAIL",
                f"no range of {NEEDED_IDS} ids for {user} in {' and '.join(missing)}: "
                "image builds cannot run",
                f"sudo usermod --add-subuids {span} --add-subgids {span} {user}")


def user_namespaces(paths: Paths, config: Config) -> Iterator[Check]:
    """Rootless builds run mkfs and chroot as namespace root; --nat in user mode runs QEMU in
    a user + network namespace."""
    ok, detail = namespaces_work()
    if ok:
        yield Check("user namespaces", "PASS", "unprivileged user namespaces work")
        return
    fix = "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
    needed = "image builds and --nat in user mode cannot run" if unprivileged() else \
        "--nat in user mode cannot start"
    yield Check("user namespaces", "FAIL" if unprivileged() else "WARN",
                f"unshare --map-root-user failed: {one_line(detail)}; {needed}", fix)


def newuidmap(paths: Paths, config: Config) -> Iterator[Check]:
    if not unprivileged():
        yield Check("newuidmap", "PASS", "not needed as root")
    elif newuidmap_found():
        yield Check("newuidmap", "PASS", "newuidmap and newgidmap found")
    else:
        yield Check("newuidmap", "FAIL", "newuidmap not found: image builds cannot run as you",
                    "install it: sudo apt-get install uidmap")


def kvm(paths: Paths, config: Config) -> Iterator[Check]:
    probe = probe_kvm()
    if probe.usable:
        yield Check("kvm", "PASS", "/dev/kvm present and usable")
        return
    if not probe.present:
        yield Check("kvm", "WARN", "no /dev/kvm; TCG will be used (slow)",
                    "load kvm_intel/kvm_amd or enable nested virtualisation")
        return
    fix = kvm_access_fix() if "cannot open" in probe.reason else None
    yield Check("kvm", "WARN", f"KVM unusable here: {probe.reason}; TCG will be used (slow)",
                fix or "run on a host with usable KVM for full speed")


CHECKS = [running_user, kvm, subordinate_ids, newuidmap, user_namespaces]
