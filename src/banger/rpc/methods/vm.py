"""vm.* methods: lifecycle, exec, and reaching a VM's network."""

from __future__ import annotations

from typing import Annotated

import msgspec

from banger.rpc.methods import Method, VmRef


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What `vm create` asks for, and what VmManager.create takes; None: the configured default."""

    name: str | None = None
    image: str | None = None
    kernel: str | None = None
    vcpu: int | None = None
    memory_mib: int | None = None
    disk_mib: int | None = None
    start: bool = True
    cold: bool = False
    net: str | None = None  # auto | tap | user (default: config network_mode)
    nat: bool = False
    publish: list[str] = []  # "HOSTPORT:GUESTPORT"
    allow: list[str] | None = None  # egress rules; None: config's egress_allow (user mode)
    # `vm run --rm`: the daemon deletes the VM once the calling process exits, however it ends
    remove_with_client: bool = False


class VmListParams(msgspec.Struct, forbid_unknown_fields=True):
    all: bool = True  # False: running VMs only


class StartParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    cold: bool = False


class StopParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    timeout: float = 20.0
    save: bool = False


class RestartParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    timeout: float = 20.0


class DeleteParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    force: bool = False


class PruneParams(msgspec.Struct, forbid_unknown_fields=True):
    dry_run: bool = False


class PruneResult(msgspec.Struct):
    deleted: list[str]
    failed: list[str]  # "NAME: why"


class SetParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    vcpu: int | None = None
    memory_mib: int | None = None
    disk_mib: int | None = None
    allow: list[str] = []  # egress rules to add (live on a running VM)
    deny: list[str] = []  # egress rules to remove


class EgressDenial(msgspec.Struct):
    time: str
    kind: str  # dns | tcp | udp
    target: str


class EgressReport(msgspec.Struct):
    name: str
    rules: list[str]
    denied: list[EgressDenial]


class LogsResult(msgspec.Struct):
    path: str
    name: str


class ExecParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    argv: list[str] | None = None
    shell: str | None = None
    env: dict[str, str] = {}
    cwd: str | None = None
    user: str | None = None
    stdin: bool = False
    tty: bool = False
    rows: int = 24
    cols: int = 80
    term: str = "xterm-256color"


class ExecResult(msgspec.Struct):
    exit_code: int | None
    signal: int | None
    code: int  # what banger exits with: the exit code, or 128 + signal


class SshInfo(msgspec.Struct):
    name: str
    host: str
    port: int
    netns: str  # "" unless tap mode runs in a network namespace
    key: str
    known_hosts: str
    alias: str
    user: str


class PortsParams(msgspec.Struct, forbid_unknown_fields=True):
    vms: list[str]


class PortRow(msgspec.Struct):
    proto: str
    address: str
    port: int
    pid: int | None
    process: str
    vm: str
    endpoint: str | None  # NAME.vm:PORT reaching it from the host, if anything does
    http: bool


class ForwardParams(msgspec.Struct, forbid_unknown_fields=True):
    vm: str
    publish: str  # HOSTPORT:GUESTPORT


class ForwardResult(msgspec.Struct):
    vm: str
    url: str
    guest_port: int


VM_LIST = Method("vm.list", VmListParams, "list[VmRecord]", "VM records, oldest first.")
VM_SHOW = Method("vm.show", VmRef, "dict[str, object]",
                 "A VM's record plus its dir, console log, backend, saved state and events.")
VM_CREATE = Method("vm.create", CreateRequest, "VmRecord",
                   "Make a VM (pulling its image and kernel) and start it unless start=false.",
                   long=True)
VM_START = Method("vm.start", StartParams, "VmRecord",
                  "Start a VM: resume saved state, restore a template, or boot cold.", long=True)
VM_STOP = Method("vm.stop", StopParams, "VmRecord",
                 "Power a VM off (save=true keeps its memory for the next start).", long=True)
VM_RESTART = Method("vm.restart", RestartParams, "VmRecord", "Stop, then start a VM.", long=True)
VM_KILL = Method("vm.kill", VmRef, "VmRecord", "Kill a VM's VMM at once.")
VM_DELETE = Method("vm.delete", DeleteParams, "VmRecord",
                   "Delete a stopped VM (force=true kills a running one first).", long=True)
VM_PRUNE = Method("vm.prune", PruneParams, "PruneResult",
                  "Delete every VM that is not running.", long=True)
VM_SET = Method("vm.set", SetParams, "VmRecord",
                "Change vcpu or memory (stopped), grow the disk, or add and remove egress rules.")
VM_LOGS = Method("vm.logs", VmRef, "LogsResult", "Where a VM's console log is.")
VM_EGRESS = Method("vm.egress", VmRef, "EgressReport",
                   "A VM's egress rules and what its guest was refused.")
VM_EXEC = Method("vm.exec", ExecParams, "ExecResult",
                 "Run a command in a guest, streaming stdin, stdout and stderr.")
VM_SSH_INFO = Method("vm.ssh_info", VmRef, "SshInfo",
                     "How to ssh into a running VM, once its sshd listens.")
VM_PORTS = Method("vm.ports", PortsParams, "list[PortRow]",
                  "Listening sockets in running VMs and how the host reaches them.")
VM_FORWARD = Method("vm.forward", ForwardParams, "ForwardResult",
                    "Publish a guest port on 127.0.0.1 now and on every later start.")


CpPath = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class CpParams(msgspec.Struct, forbid_unknown_fields=True):
    """`vm cp`: the CLI and the daemon share a host and a user, so host paths pass as paths."""

    vm: str
    src: CpPath  # absolute; a host path when to_guest, else a guest path
    dst: CpPath  # absolute; the other side's
    to_guest: bool


class CpResult(msgspec.Struct):
    vm: str
    src: str
    dst: str
    bytes: int  # tar bytes that crossed


VM_CP = Method("vm.cp", CpParams, "CpResult",
               "Copy a file or directory tree into a guest or out of it (as a tar stream).",
               long=True)
