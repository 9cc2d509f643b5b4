"""VM tools: create, list, exec, delete, fork; console logs."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from pydantic import Field

from banger.client import AsyncClient
from banger.errors import BangerError
from banger.mcp.common import (
    LOG_CAP,
    MAX_OUTPUT_CAP,
    MAX_TIMEOUT,
    OUTPUT_CAP,
    bounded,
    one_line_errors,
    progress_to,
    text,
)
from banger.textsafe import one_line
from banger.workspace import record_cwd

VmName = Annotated[str, Field(description="The VM's name", max_length=63)]
Argv = Annotated[list[Annotated[str, Field(max_length=65536)]],
                 Field(description="The command as an argv list, e.g. [\"sh\", \"-c\", \"ls\"]",
                       min_length=1, max_length=4096)]


def vm_row(vm: Any) -> dict[str, Any]:
    return {"name": vm.name, "state": vm.state, "image": vm.image, "vcpu": vm.vcpu,
            "memory_mib": vm.memory_mib, "disk_mib": vm.disk_mib, "ip": vm.ip,
            "last_error": vm.last_error, "egress": vm.egress}


def register(server: MCPServer[Any], api: AsyncClient) -> None:
    async def _home(name: str) -> str:
        """Where `vm exec` starts: the shipped workspace's dir, else /root."""
        record = (await api.vm_show(name)).get("workspace")
        return record_cwd(record if isinstance(record, dict) else None) or "/root"

    @server.tool()
    @one_line_errors
    async def vm_create(
        name: Annotated[str | None, Field(description="Name (default: generated)")] = None,
        image: Annotated[str | None, Field(description="Image (default: the configured one)")]
        = None,
        vcpu: Annotated[int | None, Field(ge=1, le=64)] = None,
        memory: Annotated[str | None, Field(description="Memory such as 1G or 512M")] = None,
        allow: Annotated[list[str] | None, Field(
            description="Egress rules: the VM reaches only these (HOST[:PORT], *.DOMAIN[:PORT], "
                        "IP[:PORT], CIDR[:PORT], host.banger.internal:PORT); default: the "
                        "configured egress_allow, usually nothing", max_length=256)] = None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Create and boot a sandbox VM; returns it running."""
        from banger.config.sizes import parse_size_mib
        from banger.egress_rules import parse_rules

        memory_mib = parse_size_mib(memory, what="memory") if memory else None
        if allow:
            parse_rules(allow)  # a bad rule is refused before anything is made
        return vm_row(await api.vm_create(name, image=image, vcpu=vcpu, memory_mib=memory_mib,
                                          allow=allow,
                                          on_progress=progress_to(ctx) if ctx else None))

    @server.tool()
    @one_line_errors
    async def vm_list() -> list[dict[str, Any]]:
        """Every VM with its state, image and shape."""
        return [vm_row(vm) for vm in await api.vm_list()]

    @server.tool()
    @one_line_errors
    async def vm_exec(
        name: VmName, command: Argv,
        cwd: Annotated[str | None, Field(description="Guest working dir (default: the "
                                                     "workspace's, else /root)", max_length=4096)]
        = None,
        stdin: Annotated[str | None, Field(description="Text fed to the command's stdin",
                                           max_length=1024 * 1024)] = None,
        timeout: Annotated[float, Field(description="Seconds, then the command is killed")]
        = 300.0,
        max_output: Annotated[int, Field(description="Bytes kept of stdout and of stderr")]
        = OUTPUT_CAP,
    ) -> dict[str, Any]:
        """Run a command in a running VM; returns its exit code, stdout and stderr (each
        capped; a note at the end says how much was cut)."""
        cap = bounded(max_output, 1, MAX_OUTPUT_CAP, "max_output")
        if not 0 < timeout <= MAX_TIMEOUT:
            timeout = MAX_TIMEOUT
        got = await api.exec_capture(name, command, limit=cap, cwd=cwd or await _home(name),
                                     env={"HOME": "/root"},
                                     stdin=None if stdin is None else stdin.encode(),
                                     timeout=timeout)
        result: dict[str, Any] = {
            "exit_code": got.code, "stdout": text(got.stdout, got.stdout_dropped, "stdout"),
            "stderr": text(got.stderr, got.stderr_dropped, "stderr")}
        if got.signal is not None:
            result["signal"] = got.signal
        if got.timed_out:
            result["note"] = f"killed after the {timeout:g} s timeout"
        return result

    @server.tool()
    @one_line_errors
    async def vm_delete(name: VmName) -> str:
        """Delete a VM, stopping it first if it runs."""
        await api.vm_delete(name, force=True)
        return f"deleted {name}"

    @server.tool()
    @one_line_errors
    async def vm_fork(
        name: VmName,
        fork_name: Annotated[str | None, Field(description="The fork's name (count > 1: the "
                                                           "prefix of NAME-1, NAME-2, ...)",
                                               max_length=60)] = None,
        count: Annotated[int, Field(ge=1, le=16)] = 1,
        ctx: Context | None = None,
    ) -> list[dict[str, Any]]:
        """Fork a running VM: new running VMs with its memory and disk (processes keep running
        in each), each with its own identity; the source keeps running."""
        return [vm_row(vm) for vm in await api.vm_fork(
            name, name=fork_name, count=count, on_progress=progress_to(ctx) if ctx else None)]

    @server.resource("banger://vm/{name}/console", mime_type="text/plain",
                     description="The newest 64 KiB of a VM's console log (terminal controls "
                                 "removed)")
    async def console_log(name: str) -> str:
        from pathlib import Path

        from banger.logfiles import rotated, tail_bytes
        from banger.textsafe import TerminalFilter

        try:
            where = await api.vm_logs(name)
        except BangerError as exc:
            raise ResourceError(one_line(str(exc), 500)) from None
        path = Path(where.path)
        raw = tail_bytes(path, LOG_CAP)
        if len(raw) < LOG_CAP:  # just rotated: the rest of the newest bytes are in the .1 file
            raw = tail_bytes(rotated(path), LOG_CAP - len(raw)) + raw
        return TerminalFilter().feed(raw, final=True).decode()
