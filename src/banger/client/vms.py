"""VM lifecycle, ports, logs and file copies, typed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from banger.client.base import BaseClient, ProgressFn

if TYPE_CHECKING:
    from banger.rpc.methods.vm import (
        CpResult,
        EgressReport,
        ForwardResult,
        LogsResult,
        PortRow,
        PruneResult,
    )
    from banger.vms.model import VmRecord


class VmApi(BaseClient):
    def vm_create(self, name: str | None = None, *, image: str | None = None,
                  kernel: str | None = None, vcpu: int | None = None,
                  memory_mib: int | None = None, disk_mib: int | None = None,
                  start: bool = True, cold: bool = False, net: str | None = None,
                  nat: bool = False, publish: list[str] | None = None,
                  allow: list[str] | None = None,
                  on_progress: ProgressFn | None = None) -> VmRecord:
        """Make a VM (pulling its image and kernel) and start it unless start=False.
        None: the configured default (a generated name, default image, vm_defaults sizes,
        config's egress_allow). allow: egress rules, e.g. ["api.example.org:443"]."""
        from banger.rpc.methods.vm import VM_CREATE, CreateRequest
        from banger.vms.model import VmRecord

        params = CreateRequest(name, image, kernel, vcpu, memory_mib, disk_mib, start, cold,
                               net, nat, publish or [], allow)
        return self.call_as(VM_CREATE, params, VmRecord, on_progress=on_progress)

    def vm_list(self, *, running_only: bool = False) -> list[VmRecord]:
        from banger.rpc.methods.vm import VM_LIST, VmListParams
        from banger.vms.model import VmRecord

        return self.call_as(VM_LIST, VmListParams(all=not running_only), list[VmRecord])

    def vm_show(self, vm: str) -> dict[str, Any]:
        """The record plus its dir, console log, backend, saved state and events."""
        from banger.rpc.methods import VmRef
        from banger.rpc.methods.vm import VM_SHOW

        return dict(self.call(VM_SHOW, VmRef(vm)))

    def vm_start(self, vm: str, *, cold: bool = False,
                 on_progress: ProgressFn | None = None) -> VmRecord:
        from banger.rpc.methods.vm import VM_START, StartParams
        from banger.vms.model import VmRecord

        return self.call_as(VM_START, StartParams(vm, cold), VmRecord, on_progress=on_progress)

    def vm_stop(self, vm: str, *, timeout: float = 20.0, save: bool = False,
                on_progress: ProgressFn | None = None) -> VmRecord:
        from banger.rpc.methods.vm import VM_STOP, StopParams
        from banger.vms.model import VmRecord

        return self.call_as(VM_STOP, StopParams(vm, timeout, save), VmRecord,
                            on_progress=on_progress)

    def vm_restart(self, vm: str, *, on_progress: ProgressFn | None = None) -> VmRecord:
        from banger.rpc.methods.vm import VM_RESTART, RestartParams
        from banger.vms.model import VmRecord

        return self.call_as(VM_RESTART, RestartParams(vm), VmRecord, on_progress=on_progress)

    def vm_kill(self, vm: str) -> VmRecord:
        from banger.rpc.methods import VmRef
        from banger.rpc.methods.vm import VM_KILL
        from banger.vms.model import VmRecord

        return self.call_as(VM_KILL, VmRef(vm), VmRecord)

    def vm_delete(self, vm: str, *, force: bool = False,
                  on_progress: ProgressFn | None = None) -> VmRecord:
        """Delete a stopped VM; force=True kills a running one first."""
        from banger.rpc.methods.vm import VM_DELETE, DeleteParams
        from banger.vms.model import VmRecord

        return self.call_as(VM_DELETE, DeleteParams(vm, force), VmRecord, on_progress=on_progress)

    def vm_prune(self, *, dry_run: bool = False) -> PruneResult:
        from banger.rpc.methods.vm import VM_PRUNE, PruneParams, PruneResult

        return self.call_as(VM_PRUNE, PruneParams(dry_run), PruneResult)

    def vm_set(self, vm: str, *, vcpu: int | None = None, memory_mib: int | None = None,
               disk_mib: int | None = None, allow: list[str] | None = None,
               deny: list[str] | None = None) -> VmRecord:
        """Change the shape, or add (allow) and remove (deny) egress rules, live."""
        from banger.rpc.methods.vm import VM_SET, SetParams
        from banger.vms.model import VmRecord

        params = SetParams(vm, vcpu, memory_mib, disk_mib, allow or [], deny or [])
        return self.call_as(VM_SET, params, VmRecord)

    def vm_egress(self, vm: str) -> EgressReport:
        """The VM's egress rules and what its guest was refused (names and addresses are guest
        text: print them through banger.textsafe)."""
        from banger.rpc.methods import VmRef
        from banger.rpc.methods.vm import VM_EGRESS, EgressReport

        return self.call_as(VM_EGRESS, VmRef(vm), EgressReport)

    def vm_logs(self, vm: str) -> LogsResult:
        """Where the VM's console log is (read it yourself: it is guest text)."""
        from banger.rpc.methods import VmRef
        from banger.rpc.methods.vm import VM_LOGS, LogsResult

        return self.call_as(VM_LOGS, VmRef(vm), LogsResult)

    def vm_ports(self, *vms: str) -> list[PortRow]:
        from banger.rpc.methods.vm import VM_PORTS, PortRow, PortsParams

        return self.call_as(VM_PORTS, PortsParams(list(vms)), list[PortRow])

    def vm_forward(self, vm: str, publish: str) -> ForwardResult:
        """Publish HOSTPORT:GUESTPORT on 127.0.0.1 now and on every later start."""
        from banger.rpc.methods.vm import VM_FORWARD, ForwardParams, ForwardResult

        return self.call_as(VM_FORWARD, ForwardParams(vm, publish), ForwardResult)

    def cp_in(self, vm: str, host_src: str, guest_dst: str, *,
              on_progress: ProgressFn | None = None) -> CpResult:
        """Copy a host file or tree into the guest (absolute paths, as `vm cp`)."""
        from banger.rpc.methods.vm import VM_CP, CpParams, CpResult

        return self.call_as(VM_CP, CpParams(vm, host_src, guest_dst, True), CpResult,
                            on_progress=on_progress)

    def cp_out(self, vm: str, guest_src: str, host_dst: str, *,
               on_progress: ProgressFn | None = None) -> CpResult:
        """Copy a guest file or tree out, through banger's safe extractor."""
        from banger.rpc.methods.vm import VM_CP, CpParams, CpResult

        return self.call_as(VM_CP, CpParams(vm, guest_src, host_dst, False), CpResult,
                            on_progress=on_progress)
