"""Checks of banger's own state: disk, mirror, defaults, daemon, image and kernel."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

from banger.config import Config
from banger.doctor.check import Check
from banger.errors import BangerError, Conflict
from banger.paths import Paths


def disk(paths: Paths, config: Config) -> Iterator[Check]:
    probe = paths.state_dir
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 1024**3
    detail = f"{free_gib:.1f} GiB free in {paths.state_dir}"
    if free_gib < 2:
        yield Check("disk", "FAIL", detail, "free some space: images and VM disks need several GiB")
    elif free_gib < 10:
        yield Check("disk", "WARN", detail, "images and VM disks may need more room")
    else:
        yield Check("disk", "PASS", detail)


def mirror(paths: Paths, config: Config) -> Iterator[Check]:
    from banger.debian.mirror import resolve_mirror

    try:
        m = resolve_mirror(config.debian_mirror)
    except BangerError as exc:
        yield Check("debian mirror", "FAIL", exc.message, "set debian_mirror in config.toml")
        return
    yield Check("debian mirror", "PASS", f"{m.url} (from {m.source})")


def release_signatures(paths: Paths, config: Config) -> Iterator[Check]:
    """Debian Release files must be signature-checked; an opt-out is shown as a warning."""
    from banger.debian.archive import release_verification

    status = release_verification()
    if config.debian_allow_unsigned:
        yield Check("release signatures", "WARN",
                    "debian_allow_unsigned = true: Debian Release files are not signature-checked, "
                    "so anyone on the path to the mirror could hand over the kernel",
                    "apt-get install gpgv debian-archive-keyring, then remove "
                    "debian_allow_unsigned from config.toml")
    elif status.possible:
        yield Check("release signatures", "PASS", f"Release files checked by {status.reason}")
    else:
        yield Check("release signatures", "FAIL",
                    f"{status.reason}: Debian kernels cannot be fetched (signatures are required)",
                    "apt-get install gpgv debian-archive-keyring")


def vm_defaults(paths: Paths, config: Config) -> Iterator[Check]:
    d = config.sizes
    yield Check("vm defaults", "PASS",
                f"vcpu {d.vcpu.value} ({d.vcpu.source}), memory {d.memory_mib.value} MiB "
                f"({d.memory_mib.source}), disk {d.disk_mib.value} MiB ({d.disk_mib.source})")


def daemon(paths: Paths, config: Config) -> Iterator[Check]:
    from banger.rpc.client import Client
    from banger.rpc.methods import NoParams
    from banger.rpc.methods.system import DAEMON_STATUS

    try:
        st = Client(paths, autostart=False).call(DAEMON_STATUS, NoParams())
    except Conflict as exc:  # the socket or its dir is not ours: never talked to
        yield Check("daemon", "FAIL", exc.message, "remove what it names, then retry")
        return
    except BangerError:
        yield Check("daemon", "WARN", f"not running ({paths.socket})",
                    "it starts on first use, or run `banger daemon start`")
        return
    yield Check("daemon", "PASS", f"pid {st['pid']}, v{st['version']}, up {st['uptime_s']}s")


def artifacts(paths: Paths, config: Config) -> Iterator[Check]:
    for kind, name, base in (("kernel", config.default_kernel, paths.kernels_dir),
                             ("image", config.default_image, paths.images_dir)):
        if (base / name / "manifest.json").exists():
            yield Check(f"default {kind}", "PASS", f"{name} (present)")
        elif _in_catalog(kind, name):
            yield Check(f"default {kind}", "PASS", f"{name} (in the catalog; fetched on first use)")
        else:
            yield Check(f"default {kind}", "FAIL", f"{name} is neither present nor in the catalog",
                        f"set default_{kind} in config.toml to a name from `banger {kind} catalog`")


def _in_catalog(kind: str, name: str) -> bool:
    from banger.images import catalog as images
    from banger.kernels import catalog as kernels

    try:
        if kind == "kernel":
            kernels.lookup(name)
        else:
            images.lookup(name)
    except BangerError:
        return False
    return True


CHECKS = [disk, mirror, release_signatures, vm_defaults, daemon, artifacts]
