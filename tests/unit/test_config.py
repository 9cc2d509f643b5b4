from pathlib import Path

import pytest

from banger.config import load_config
from banger.errors import ConfigError
from banger.paths import Paths, resolve_paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = resolve_paths({"BANGER_HOME": str(tmp_path)})
    p.config_dir.mkdir(parents=True)
    return p


def write(paths: Paths, text: str) -> None:
    paths.config_file.write_text(text)


def test_missing_file_gives_defaults(paths: Paths) -> None:
    cfg = load_config(paths)
    assert not cfg.exists
    assert cfg.vmm == "auto" and cfg.default_image == "debian-bookworm"
    assert cfg.sizes.disk_mib.value == 8192
    assert cfg.sizes.vcpu.source in ("auto", "builtin")
    assert cfg.ssh_key == paths.state_dir / "ssh" / "id_ed25519"


def test_values_and_provenance(paths: Paths) -> None:
    write(paths, 'vmm = "qemu"\n[vm_defaults]\nvcpu = 2\nmemory = "1.5G"\ndisk = 4096\n'
                 '[[file_sync]]\nhost = "~/.gitconfig"\nguest = "~/.gitconfig"\nmode = "0644"\n')
    cfg = load_config(paths)
    assert cfg.vmm == "qemu"
    assert (cfg.sizes.vcpu.value, cfg.sizes.vcpu.source) == (2, "config")
    assert cfg.sizes.memory_mib.value == 1536
    assert cfg.sizes.disk_mib.value == 4096
    assert cfg.file_sync[0].mode == "0644"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('colour = "red"\n', "unknown key 'colour'"),
        ('[vm_defaults]\ncpus = 2\n', "unknown key 'vm_defaults.cpus' (allowed: vcpu, memory, disk)"),
        ('vmm = "vbox"\n', "key 'vmm'"),
        ('vmm = "vbox"\n', "allowed: auto, qemu, firecracker"),
        ('[vm_defaults]\nmemory = "lots"\n', "key 'vm_defaults.memory': expected a size"),
        ('[vm_defaults]\nvcpu = 0\n', "key 'vm_defaults.vcpu'"),
        ('[vm_defaults]\nvcpu = "two"\n', "key 'vm_defaults.vcpu'"),
        ('bridge_cidr = "10.0.0.1/24"\n', "key 'bridge_cidr'"),
        ('dns_listen = "localhost"\n', "key 'dns_listen'"),
        ('debian_mirror = "ftp.example"\n', "key 'debian_mirror'"),
        ('ssh_key_path = "rel/key"\n', "key 'ssh_key_path'"),
        ('[[file_sync]]\nhost = "a"\nguest = "/etc/x"\n', "key 'file_sync[0].guest'"),
        ('[[file_sync]]\nhost = "a"\nguest = "~/x"\nextra = 1\n', "unknown key 'file_sync.extra'"),
        ('vmm = \n', "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(paths: Paths, text: str, expected: str) -> None:
    write(paths, text)
    with pytest.raises(ConfigError) as info:
        load_config(paths)
    message = str(info.value)
    assert message.startswith(str(paths.config_file))
    assert expected in message
    assert "\n" not in message


def test_banger_home_moves_everything(tmp_path: Path) -> None:
    p = resolve_paths({"BANGER_HOME": str(tmp_path)})
    for d in (p.config_dir, p.state_dir, p.cache_dir, p.runtime_dir):
        assert tmp_path in d.parents


def test_xdg_layout() -> None:
    p = resolve_paths({"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000"})
    assert p.config_file == Path("/home/u/.config/banger/config.toml")
    assert p.db_file == Path("/home/u/.local/state/banger/banger.db")
    assert p.cache_dir == Path("/home/u/.cache/banger")
    assert p.socket == Path("/run/user/1000/banger/bangerd.sock")


def test_debian_allow_unsigned_is_off_by_default_and_typed(paths: Paths) -> None:
    assert load_config(paths).debian_allow_unsigned is False
    write(paths, "debian_allow_unsigned = true\n")
    assert load_config(paths).debian_allow_unsigned is True
    write(paths, 'debian_allow_unsigned = "yes"\n')
    with pytest.raises(ConfigError, match="key 'debian_allow_unsigned'"):
        load_config(paths)


def test_doctor_shows_the_unsigned_opt_out(paths: Paths) -> None:
    from banger.doctor.state_checks import release_signatures

    [default] = release_signatures(paths, load_config(paths))
    assert default.status in ("PASS", "FAIL")  # FAIL: no gpgv or keyring on this host
    write(paths, "debian_allow_unsigned = true\n")
    [opted_out] = release_signatures(paths, load_config(paths))
    assert opted_out.status == "WARN" and "debian_allow_unsigned = true" in opted_out.detail
    assert "not signature-checked" in opted_out.detail and opted_out.fix
