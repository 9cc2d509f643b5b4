#!/usr/bin/env python3
"""banger guest agent: serves the banger agent protocol on one byte stream.

Stdlib-only, Python >= 3.7.  Installed in guests as /usr/local/lib/banger/agent.py
next to protocol.py.  Startup imports only what serving needs; everything
else (subprocess, tarfile, pty ioctls, ctypes, pwd) is imported on first use
because every import costs tens of milliseconds in a TCG guest.

Threads: the main thread reads and dispatches frames; each channel runs its
operation in its own thread; one reaper thread collects every child status.
"""

from __future__ import annotations

import os
import sys
import threading
import time

if __package__:
    from . import protocol as proto
else:  # running as a plain script in the guest: protocol.py sits next to us
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import protocol as proto  # type: ignore[import-not-found, no-redef]

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

AGENT_VERSION = "0.1.0"
READ_SIZE = 256 * 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PORT_RETRY_SECONDS = 0.1  # virtio-serial reads return EOF while the host is away
FAST_RETRY_SECONDS = 0.005
FAST_RETRY_WINDOW = 3.0
LINUX_REBOOT_CMD_POWER_OFF = 0x4321FEDC
UNCLAIMED_STATUS_LIMIT = 256


def log(message: str) -> None:
    sys.stderr.write(f"banger-agent: {message}\n")
    sys.stderr.flush()


class AgentError(Exception):
    """An operation failed; becomes an ERROR frame with this code."""

    def __init__(self, code: str, message: str) -> None:
        Exception.__init__(self, message)
        self.code = code
        self.message = message


class Aborted(Exception):
    """The channel was closed by the host or by a session reset."""


# --------------------------------------------------------------------------- processes


class Reaper:
    """Collects every child's exit status and hands it to whoever spawned that pid.

    waitpid(-1) also reaps orphans re-parented to us, which PID 1 must do.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, ExitWaiter] = {}
        self._unclaimed: dict[int, int] = {}
        self._children_exist = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="reaper", daemon=True).start()

    def watch(self, pid: int) -> ExitWaiter:
        waiter = ExitWaiter()
        with self._lock:
            if pid in self._unclaimed:
                waiter.deliver(self._unclaimed.pop(pid))
            else:
                self._waiters[pid] = waiter
        self._children_exist.set()
        return waiter

    def _run(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self._children_exist.wait(1.0)  # orphans may still be re-parented to us
                self._children_exist.clear()
                continue
            except OSError:
                continue
            self._deliver(pid, status)

    def _deliver(self, pid: int, status: int) -> None:
        with self._lock:
            waiter = self._waiters.pop(pid, None)
            if waiter is None:
                if len(self._unclaimed) >= UNCLAIMED_STATUS_LIMIT:
                    self._unclaimed.pop(next(iter(self._unclaimed)))
                self._unclaimed[pid] = status
                return
        waiter.deliver(status)


class ExitWaiter:
    def __init__(self) -> None:
        self.status = 0
        self.done = threading.Event()

    def deliver(self, status: int) -> None:
        self.status = status
        self.done.set()

    def wait(self) -> int:
        self.done.wait()
        return self.status


def exit_result(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"exit_code": None, "signal": os.WTERMSIG(status)}
    return {"exit_code": os.WEXITSTATUS(status), "signal": None}


def kill_group(pid: int) -> None:
    """Kill the whole process group: exec children are session leaders."""
    import signal

    try:  # noqa: SIM105 (contextlib would be one more import in the guest)
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # already gone


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --------------------------------------------------------------------------- flow control


class Credit:
    """Bytes this side may still send on one channel; WINDOW frames add more."""

    def __init__(self, initial: int) -> None:
        self._available = initial
        self._closed = False
        self._cond = threading.Condition()

    def grant(self, amount: int) -> None:
        with self._cond:
            self._available += amount
            self._cond.notify_all()

    def take(self, most: int) -> int:
        """Block until some credit exists; 0 means the channel is gone."""
        with self._cond:
            while self._available <= 0 and not self._closed:
                self._cond.wait()
            if self._closed:
                return 0
            amount = min(most, self._available)
            self._available -= amount
            return amount

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Inbox:
    """Data the host sent on one channel, waiting for the operation thread."""

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._limit = limit
        self._eof = False
        self._aborted = False
        self._cond = threading.Condition()

    def put(self, data: bytes) -> bool:
        """False when the host sent more than the credit we gave it."""
        with self._cond:
            if self._aborted or self._eof:
                return True
            self._buffered += len(data)
            self._chunks.append(data)
            self._cond.notify_all()
            return self._buffered <= self._limit

    def put_eof(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def get(self) -> bytes:
        """Next chunk, b"" at EOF; raises Aborted when the channel is gone."""
        with self._cond:
            while not self._chunks and not self._eof and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted()
            if not self._chunks:
                return b""
            chunk = self._chunks.pop(0)
            self._buffered -= len(chunk)
            return chunk


# --------------------------------------------------------------------------- channels


class Channel:
    """One request: its operation runs in a thread, frames go through the session."""

    def __init__(self, session: Session, channel_id: int) -> None:
        self.session = session
        self.id = channel_id
        self.credit = Credit(proto.INITIAL_WINDOW)
        self.inbox = Inbox(proto.INITIAL_WINDOW)
        self.input_stream = -1  # the stream this op accepts DATA on, if any
        self.closed = False
        self.on_control: Callable[[dict[str, Any]], None] | None = None
        self.after_finish: Callable[[], None] | None = None
        self._abort_hooks: list[Callable[[], None]] = []

    def start(self, operation: Callable[[Channel, dict[str, Any]], dict[str, Any]],
              params: dict[str, Any]) -> None:
        thread = threading.Thread(target=self._run, args=(operation, params), daemon=True)
        thread.start()

    def _run(self, operation: Callable[[Channel, dict[str, Any]], dict[str, Any]],
             params: dict[str, Any]) -> None:
        try:
            result = operation(self, params)
        except Aborted:
            return
        except AgentError as e:
            self.session.finish(self, proto.encode_error(self.id, e.code, e.message))
            return
        except Exception as e:  # an op bug must not take the agent down
            log(f"channel {self.id} failed: {e!r}")
            self.session.finish(self, proto.encode_error(self.id, proto.E_FAILED, str(e)))
            return
        self.session.finish(self, proto.encode_json(proto.RESULT, self.id, result))
        if self.after_finish is not None:
            self.after_finish()

    def add_abort_hook(self, hook: Callable[[], None]) -> None:
        self._abort_hooks.append(hook)
        if self.closed:
            hook()

    def release(self) -> None:
        """Wake every thread blocked on this channel's credit or input."""
        self.closed = True
        self.credit.close()
        self.inbox.abort()

    def abort(self) -> None:
        self.release()
        for hook in self._abort_hooks:
            try:
                hook()
            except Exception as e:
                log(f"abort hook on channel {self.id}: {e!r}")

    def send_data(self, stream: int, data: bytes) -> None:
        self.session.send(proto.encode_frame(proto.DATA, self.id, data, stream), self)

    def send_eof(self, stream: int) -> None:
        self.session.send(proto.encode_frame(proto.EOF, self.id, b"", stream), self)

    def send_event(self, event: dict[str, Any]) -> None:
        self.session.send(proto.encode_json(proto.CONTROL, self.id, event), self)

    def consumed(self, amount: int) -> None:
        """Give the host back credit for input we have processed."""
        self.session.send(proto.encode_window(self.id, amount), self)

    def send_stream(self, stream: int, data: bytes) -> None:
        """Send data as credit allows; raises Aborted when the channel goes away."""
        view = memoryview(data)
        while view:
            amount = self.credit.take(min(len(view), proto.DATA_CHUNK))
            if not amount:
                raise Aborted()
            self.send_data(stream, bytes(view[:amount]))
            view = view[amount:]


class Session:
    """The state one host connection (or one HELLO) owns: its open channels."""

    def __init__(self, agent: Agent, write: Callable[[bytes], None]) -> None:
        self.agent = agent
        self._write = write
        self._lock = threading.Lock()  # one frame at a time on the wire
        self.channels: dict[int, Channel] = {}
        self.alive = True

    def send(self, frame: bytes, channel: Channel | None = None, last: bool = False) -> bool:
        with self._lock:
            if not self.alive or (channel is not None and channel.closed):
                return False
            if last and channel is not None:
                channel.closed = True
            try:
                self._write(frame)
            except OSError as e:
                log(f"write to host failed: {e}")
                self.alive = False
                return False
        return True

    def finish(self, channel: Channel, final_frame: bytes) -> None:
        with self._lock:
            if self.channels.get(channel.id) is channel:
                del self.channels[channel.id]
        if self.send(final_frame, channel, last=True):
            self.send(proto.encode_frame(proto.CLOSE, channel.id))
        channel.release()

    def fail_channel(self, channel_id: int, code: str, message: str) -> None:
        log(f"channel {channel_id}: {code}: {message}")
        channel = self.channels.pop(channel_id, None)
        if channel is not None:
            channel.abort()
        self.send(proto.encode_error(channel_id, code, message))
        self.send(proto.encode_frame(proto.CLOSE, channel_id))

    def reset(self) -> None:
        """Abort every channel (killing its processes): the host forgot them."""
        with self._lock:
            channels = list(self.channels.values())
            self.channels.clear()
            for channel in channels:
                channel.closed = True
        for channel in channels:
            channel.abort()

    def dispatch(self, item: proto.Frame | proto.OversizedFrame) -> None:
        try:
            if isinstance(item, proto.OversizedFrame):
                message = f"frame of {item.length} bytes exceeds the {proto.MAX_PAYLOAD} byte limit"
                self.fail_channel(item.channel, proto.E_TOO_LARGE, message)
                return
            handler = self._handlers().get(item.type)
            if handler is None:
                self.fail_channel(item.channel, proto.E_BAD_FRAME,
                                  f"unknown frame type {item.type}")
                return
            handler(item)
        except proto.ProtocolError as e:
            self.fail_channel(item.channel, proto.E_BAD_FRAME, str(e))
        except Exception as e:  # never let one frame kill the agent
            log(f"dispatching {item!r}: {e!r}")
            self.fail_channel(item.channel, proto.E_FAILED, f"agent error: {e!r}")

    def _handlers(self) -> dict[int, Callable[[proto.Frame], None]]:
        return {
            proto.HELLO: self._on_hello,
            proto.OPEN: self._on_open,
            proto.DATA: self._on_data,
            proto.EOF: self._on_eof,
            proto.WINDOW: self._on_window,
            proto.CONTROL: self._on_control,
            proto.CLOSE: self._on_close,
        }

    def _on_hello(self, frame: proto.Frame) -> None:
        hello = frame.json()
        self.reset()
        self.send(proto.encode_json(proto.HELLO_ACK, proto.SESSION_CHANNEL, {
            "version": proto.PROTOCOL_VERSION,
            "nonce": hello.get("nonce"),
            "agent_version": AGENT_VERSION,
            "pid1": self.agent.pid1,
        }))

    def _on_open(self, frame: proto.Frame) -> None:
        if frame.channel == proto.SESSION_CHANNEL or frame.channel in self.channels:
            self.fail_channel(frame.channel, proto.E_BAD_REQUEST,
                              f"channel id {frame.channel} is reserved or in use")
            return
        request = frame.json()
        op, params = str(request.get("op")), request.get("params") or {}
        operation = OPERATIONS.get(op)
        if operation is None:
            self.fail_channel(frame.channel, proto.E_UNKNOWN_OP, f"unknown op {op!r}")
            return
        if not isinstance(params, dict):
            self.fail_channel(frame.channel, proto.E_BAD_REQUEST, "params must be an object")
            return
        channel = Channel(self, frame.channel)
        channel.input_stream = INPUT_STREAMS.get(op, -1)
        self.channels[frame.channel] = channel
        channel.start(operation, params)

    def _on_data(self, frame: proto.Frame) -> None:
        channel = self.channels.get(frame.channel)
        if channel is None:
            return  # in flight when the channel finished
        if frame.stream != channel.input_stream:
            raise proto.ProtocolError(f"this channel takes no data on stream {frame.stream}")
        if not channel.inbox.put(frame.payload):
            self.fail_channel(frame.channel, proto.E_FLOW_CONTROL,
                              "host sent more data than its window allows")

    def _on_eof(self, frame: proto.Frame) -> None:
        channel = self.channels.get(frame.channel)
        if channel is not None and frame.stream == channel.input_stream:
            channel.inbox.put_eof()

    def _on_window(self, frame: proto.Frame) -> None:
        credit = proto.decode_window(frame.payload)
        channel = self.channels.get(frame.channel)
        if channel is not None:
            channel.credit.grant(credit)

    def _on_control(self, frame: proto.Frame) -> None:
        channel = self.channels.get(frame.channel)
        if channel is None:
            return
        message = frame.json()
        if channel.on_control is None:
            raise proto.ProtocolError("this channel takes no control messages")
        channel.on_control(message)

    def _on_close(self, frame: proto.Frame) -> None:
        channel = self.channels.pop(frame.channel, None)
        if channel is not None:
            channel.abort()
            self.send(proto.encode_frame(proto.CLOSE, frame.channel))


class Agent:
    """Process-wide state shared by sessions."""

    def __init__(self, pid1: bool, root: str) -> None:
        self.pid1 = pid1
        self.root = root  # "/" in guests; a scratch dir when testing configure
        self.started = time.monotonic()
        self.reaper = Reaper()

    @property
    def testing(self) -> bool:
        return self.root != "/"

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))


# --------------------------------------------------------------------------- simple ops


def op_health(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    agent = channel.session.agent
    return {
        "ok": True,
        "version": AGENT_VERSION,
        "protocol": proto.PROTOCOL_VERSION,
        "uptime": round(time.monotonic() - agent.started, 3),
        "pid1": agent.pid1,
    }


def op_info(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    uname = os.uname()
    return {
        "hostname": uname.nodename,
        "kernel": uname.release,
        "arch": uname.machine,
        "os_release": read_os_release(),
        "cpus": os.cpu_count(),
        "memory": read_meminfo(),
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "systemd": systemd_is_pid1(),
        "agent_pid1": channel.session.agent.pid1,
        "boot_uptime": read_boot_uptime(),
    }


def read_text(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def read_os_release() -> dict[str, str]:
    fields = {}
    text = read_text("/etc/os-release") or read_text("/usr/lib/os-release")
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def read_meminfo() -> dict[str, int]:
    wanted = {"MemTotal": "total", "MemAvailable": "available"}
    memory = {}
    for line in read_text("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        if key in wanted and rest.split():
            memory[wanted[key]] = int(rest.split()[0]) * 1024
    return memory


def read_boot_uptime() -> float | None:
    text = read_text("/proc/uptime").split()
    return float(text[0]) if text else None


def systemd_is_pid1() -> bool:
    return read_text("/proc/1/comm").strip() == "systemd"


# --------------------------------------------------------------------------- configure / poweroff


def op_configure(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    agent = channel.session.agent
    done = []
    if params.get("hostname") is not None:
        set_hostname(agent, require_hostname(params["hostname"]))
        done.append("hostname")
    if params.get("authorized_keys") is not None:
        keys = params["authorized_keys"]
        write_authorized_keys(agent, [keys] if isinstance(keys, str) else list(keys))
        done.append("authorized_keys")
    if params.get("clock") is not None:
        set_clock(agent, float(params["clock"]))
        done.append("clock")
    if params.get("machine_id") is not None:
        set_machine_id(agent, str(params["machine_id"]))
        done.append("machine_id")
    if params.get("entropy") is not None:
        add_entropy(agent, str(params["entropy"]))
        done.append("entropy")
    if params.get("network") is not None:
        configure_network(agent, params["network"])
        done.append("network")
    if params.get("ssh_host_key") is not None:
        set_ssh_host_key(agent, params["ssh_host_key"])
        done.append("ssh_host_key")
    if params.get("git_identity") is not None:
        try:
            set_git_identity(agent, params["git_identity"])
            done.append("git_identity")
        except AgentError as e:  # best effort, like file_sync: never a failed start
            log(f"git identity not set: {e}")
    return {"configured": done}


def git_config_value(value: Any) -> str:
    if not isinstance(value, str) or "\n" in value or "\0" in value:
        raise AgentError(proto.E_BAD_REQUEST, "git identity values are one-line strings")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_git_identity(agent: Agent, identity: Any) -> None:
    """The host's git user.name/email for commits made in the guest."""
    if not isinstance(identity, dict):
        raise AgentError(proto.E_BAD_REQUEST, "git_identity must be {name, email}")
    values = {key: identity.get(key) or "" for key in ("name", "email")}
    quoted = {key: git_config_value(value) for key, value in values.items()}
    path = agent.path("/root/.gitconfig")
    if not os.path.exists(path):  # a fresh guest: write the file, no git process (forks are slow)
        lines = "".join(f"\t{key} = {quoted[key]}\n" for key, value in values.items() if value)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_file_atomic(path, "[user]\n" + lines, 0o644)
        return
    for key, value in values.items():
        if value:
            run_tool(agent, ["git", "config", "--file", path, f"user.{key}", value])


def set_ssh_host_key(agent: Agent, key: Any) -> None:
    """Replace every host key with the host-made ed25519 pair (ssh-keygen costs ~1 s under
    TCG), then have a running sshd load it: SIGHUP makes sshd re-exec itself."""
    if not isinstance(key, dict) or not all(isinstance(key.get(k), str) for k in ("private", "public")):
        raise AgentError(proto.E_BAD_REQUEST, "ssh_host_key must be {private, public}")
    ssh_dir = agent.path("/etc/ssh")
    os.makedirs(ssh_dir, exist_ok=True)
    base = os.path.join(ssh_dir, "ssh_host_ed25519_key")
    write_file_atomic(base, key["private"], 0o600)  # new pair first: never no key at all
    write_file_atomic(base + ".pub", key["public"], 0o644)
    for name in os.listdir(ssh_dir):
        if name.startswith("ssh_host_") and name not in ("ssh_host_ed25519_key",
                                                         "ssh_host_ed25519_key.pub"):
            os.unlink(os.path.join(ssh_dir, name))
    if agent.testing:
        return
    pid = read_text("/run/sshd.pid").strip()
    if pid.isdigit() and read_text(f"/proc/{pid}/comm").strip() == "sshd":
        import signal

        os.kill(int(pid), signal.SIGHUP)


def set_machine_id(agent: Agent, machine_id: str) -> None:
    if len(machine_id) != 32 or any(c not in "0123456789abcdef" for c in machine_id):
        raise AgentError(proto.E_BAD_REQUEST, "machine_id must be 32 lowercase hex digits")
    write_file_atomic(agent.path("/etc/machine-id"), machine_id + "\n", 0o444)


RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


def add_entropy(agent: Agent, b64: str) -> None:
    """Mix host randomness into the kernel pool: a restored snapshot must not repeat its RNG."""
    import base64
    import fcntl
    import struct

    data = base64.b64decode(b64)
    if agent.testing:
        log(f"testing: not adding {len(data)} bytes of entropy")
        return
    with open("/dev/urandom", "wb") as f:
        fcntl.ioctl(f.fileno(), RNDADDENTROPY, struct.pack("ii", len(data) * 8, len(data)) + data)
        # Credited entropy only reaches /dev/urandom at the next periodic reseed: force it now.
        try:
            fcntl.ioctl(f.fileno(), RNDRESEEDCRNG)
        except OSError as e:  # kernels before 4.17 lack it
            log(f"RNDRESEEDCRNG: {e}")


def require_hostname(name: Any) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
    if not isinstance(name, str) or not 0 < len(name) <= 64 or not set(name) <= allowed:
        raise AgentError(proto.E_BAD_REQUEST, f"invalid hostname {name!r}")
    return name


def write_file_atomic(path: str, data: str, mode: int) -> None:
    tmp = path + ".banger-tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    # Created with its final mode: a private key is never readable, even for a moment.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
        f.write(data)
    os.chmod(tmp, mode)  # the umask may have taken bits away
    os.rename(tmp, path)


def set_hostname(agent: Agent, name: str) -> None:
    os.makedirs(agent.path("/etc"), exist_ok=True)
    write_file_atomic(agent.path("/etc/hostname"), name + "\n", 0o644)
    hosts = read_text(agent.path("/etc/hosts"), "127.0.0.1\tlocalhost\n").splitlines()
    kept = [line for line in hosts if not line.startswith("127.0.1.1")]
    kept.append(f"127.0.1.1\t{name}")
    write_file_atomic(agent.path("/etc/hosts"), "\n".join(kept) + "\n", 0o644)
    if agent.testing:
        log(f"testing: not setting the kernel hostname to {name}")
        return
    with open("/proc/sys/kernel/hostname", "w") as f:
        f.write(name)


def write_authorized_keys(agent: Agent, keys: list[str]) -> None:
    ssh_dir = agent.path("/root/.ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    text = "".join(key.strip() + "\n" for key in keys if key.strip())
    write_file_atomic(os.path.join(ssh_dir, "authorized_keys"), text, 0o600)


def set_clock(agent: Agent, epoch: float) -> None:
    if agent.testing:
        log(f"testing: not setting the clock to {epoch:.3f}")
        return
    try:
        time.clock_settime(time.CLOCK_REALTIME, epoch)
    except OSError as e:
        raise AgentError(proto.E_FAILED, f"clock_settime: {e.strerror}") from None


def configure_network(agent: Agent, net: dict[str, Any]) -> None:
    """Static IPv4 on the NIC with this MAC, default route and resolv.conf; no DHCP needed."""
    if not isinstance(net, dict) or not isinstance(net.get("mac"), str):
        raise AgentError(proto.E_BAD_REQUEST, "network must be {mac, address, gateway, dns}")
    dns = [str(server) for server in net.get("dns") or []]
    if dns:
        os.makedirs(agent.path("/etc"), exist_ok=True)
        resolv = agent.path("/etc/resolv.conf")
        if os.path.islink(resolv):
            os.unlink(resolv)  # e.g. a dangling link to systemd-resolved's stub
        text = "".join(f"nameserver {s}\n" for s in dns)
        if read_text(resolv) != text:  # a clone usually has it already: writes cost under TCG
            write_file_atomic(resolv, text, 0o644)
    if agent.testing:
        log(f"testing: not configuring interface {net['mac']}")
        return
    mac = net["mac"].lower()
    iface = interface_with_mac(mac)
    address = str(net.get("address") or "")
    gateway = str(net.get("gateway") or "")
    try:  # ioctls: every `ip` fork costs ~0.1 s under TCG
        configure_with_ioctls(iface, mac, address, gateway)
    except OSError as e:
        log(f"network ioctls failed ({e}); using ip")
        configure_with_ip(agent, iface, mac, address, gateway)


def configure_with_ip(agent: Agent, iface: str, mac: str, address: str, gateway: str) -> None:
    run_tool(agent, ["ip", "link", "set", iface, "address", mac, "up"])
    if address and address not in ipv4_addresses(iface):
        run_tool(agent, ["ip", "addr", "flush", "dev", iface, "scope", "global"])
        run_tool(agent, ["ip", "addr", "add", address, "dev", iface])
    if gateway and default_gateway() != gateway:
        run_tool(agent, ["ip", "route", "replace", "default", "via", gateway, "dev", iface])


SIOCADDRT, SIOCDELRT = 0x890B, 0x890C
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B
SIOCSIFADDR, SIOCSIFNETMASK, SIOCSIFHWADDR = 0x8916, 0x891C, 0x8924
RTF_UP_GATEWAY = 0x3


def _ifreq(iface: str, payload: bytes = b"") -> bytes:
    import struct

    return struct.pack("16s", iface.encode()[:15]) + payload.ljust(24, b"\0")


def _sockaddr_in(address: str) -> bytes:
    import socket
    import struct

    return struct.pack("HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def configure_with_ioctls(iface: str, mac: str, address: str, gateway: str) -> None:
    """MAC, link up, IPv4 address and default route; skips what the interface already has."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # A clone restored from a template still has the template's MAC: give it its own.
        if read_text(f"/sys/class/net/{iface}/address").strip().lower() != mac:
            hwaddr = struct.pack("H6s", 1, bytes.fromhex(mac.replace(":", "")))  # ARPHRD_ETHER
            fcntl.ioctl(s.fileno(), SIOCSIFHWADDR, _ifreq(iface, hwaddr))
        flags = struct.unpack("H", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(iface))[16:18])[0]
        if not flags & 1:  # IFF_UP
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _ifreq(iface, struct.pack("H", flags | 1)))
        if address and address not in ipv4_addresses(iface):
            ip, _, prefix = address.partition("/")
            bits = (0xFFFFFFFF << (32 - int(prefix or 32))) & 0xFFFFFFFF
            mask = socket.inet_ntoa(struct.pack("!I", bits))
            fcntl.ioctl(s.fileno(), SIOCSIFADDR, _ifreq(iface, _sockaddr_in(ip)))
            fcntl.ioctl(s.fileno(), SIOCSIFNETMASK, _ifreq(iface, _sockaddr_in(mask)))
        current = default_gateway()
        if gateway and current != gateway:
            if current:
                fcntl.ioctl(s.fileno(), SIOCDELRT, _rtentry(current))
            fcntl.ioctl(s.fileno(), SIOCADDRT, _rtentry(gateway))


def _rtentry(gateway: str) -> bytes:
    """struct rtentry for 0.0.0.0/0 via gateway (the kernel finds the device from the gateway)."""
    import struct

    any_address = _sockaddr_in("0.0.0.0")
    return struct.pack("@L16s16s16sHhLPhPLLH", 0, any_address, _sockaddr_in(gateway), any_address,
                       RTF_UP_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0).ljust(120, b"\0")


def ipv4_addresses(iface: str) -> list[str]:
    """ADDR/PREFIX of iface, read with ioctls (no `ip` process)."""
    import fcntl
    import socket
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = _ifreq(iface)
            addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24])
            mask = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, req)[20:24]
    except OSError:
        return []
    prefix = bin(struct.unpack("!I", mask)[0]).count("1")
    return [f"{addr}/{prefix}"]


def default_gateway() -> str:
    import socket
    import struct

    for line in read_text("/proc/net/route").splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return ""


def interface_with_mac(mac: str) -> str:
    names = [n for n in sorted(os.listdir("/sys/class/net")) if n != "lo"]
    for name in names:
        if read_text(f"/sys/class/net/{name}/address").strip().lower() == mac:
            return name
    if len(names) == 1:
        return names[0]  # a guest restored from a snapshot keeps the template's MAC
    raise AgentError(proto.E_NOT_FOUND, f"no network interface with MAC {mac}")


def run_tool(agent: Agent, argv: list[str]) -> None:
    """Run a short command to completion; the reaper owns every child's exit status."""
    import subprocess

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env={"PATH": DEFAULT_PATH})
    except OSError as e:
        raise AgentError(proto.E_FAILED, f"cannot run {argv[0]}: {e}") from None
    waiter = agent.reaper.watch(proc.pid)
    stderr = proc.stderr
    assert stderr is not None
    err = stderr.read().decode(errors="replace").strip()
    stderr.close()
    status = waiter.wait()
    proc.returncode = status  # the reaper already collected it
    if status != 0:
        raise AgentError(proto.E_FAILED, f"{' '.join(argv)} failed: {err}")


# --------------------------------------------------------------------------- ports


TCP_LISTEN = "0A"


def op_ports(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    """Listening TCP and bound UDP sockets from /proc/net, with the owning process."""
    owners = socket_owners()
    ports = []
    for proto_name in ("tcp", "tcp6", "udp", "udp6"):
        for entry in read_proc_net(proto_name):
            if proto_name.startswith("tcp") and entry["state"] != TCP_LISTEN:
                continue
            if proto_name.startswith("udp") and entry["remote_port"] != 0:
                continue
            pid, process = owners.get(entry["inode"], (None, ""))
            ports.append({"proto": proto_name, "address": entry["address"],
                          "port": entry["port"], "pid": pid, "process": process})
    ports.sort(key=lambda p: (p["port"], p["proto"]))
    return {"ports": ports}


def read_proc_net(name: str) -> list[dict[str, Any]]:
    entries = []
    for line in read_text(f"/proc/net/{name}").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote = fields[1], fields[2]
        addr_hex, _, port_hex = local.partition(":")
        entries.append({"address": decode_address(addr_hex), "port": int(port_hex, 16),
                        "remote_port": int(remote.partition(":")[2], 16),
                        "state": fields[3], "inode": fields[9]})
    return entries


def decode_address(hex_addr: str) -> str:
    import socket

    raw = bytes.fromhex(hex_addr)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def socket_owners() -> dict[str, tuple[int, str]]:
    """Socket inode -> (pid, command) from /proc/*/fd links (no `ss` needed)."""
    owners: dict[str, tuple[int, str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] not in owners:
                owners[target[8:-1]] = (int(pid), process_line(pid))
    return owners


def process_line(pid: str) -> str:
    argv = read_text(f"/proc/{pid}/cmdline").split("\0")
    return " ".join(part for part in argv if part)[:120] or read_text(f"/proc/{pid}/comm").strip()


def op_poweroff(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    agent = channel.session.agent
    channel.after_finish = lambda: power_off(agent)  # answer first, then go down
    return {"ok": True}


def power_off(agent: Agent) -> None:
    if agent.testing:
        log("testing: not powering off")
        return
    log("powering off")
    if systemd_is_pid1():
        import subprocess

        subprocess.Popen(["systemctl", "poweroff"])  # the reaper collects it
        return
    os.sync()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).reboot(LINUX_REBOOT_CMD_POWER_OFF)
    except Exception as e:
        log(f"reboot(2) failed: {e!r}")
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")


# --------------------------------------------------------------------------- exec


class User:
    def __init__(self, name: str, uid: int, gid: int, home: str, shell: str) -> None:
        self.name, self.uid, self.gid, self.home, self.shell = name, uid, gid, home, shell


def resolve_user(spec: Any) -> User:
    import pwd

    try:
        if spec is None:
            entry = pwd.getpwuid(os.getuid())
        elif isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
            entry = pwd.getpwuid(int(spec))
        else:
            entry = pwd.getpwnam(str(spec))
    except KeyError:
        if spec is None:  # no passwd entry for ourselves: run as we are
            return User("root", os.getuid(), os.getgid(), os.environ.get("HOME", "/"), "/bin/sh")
        raise AgentError(proto.E_BAD_REQUEST, f"no such user {spec!r}") from None
    if entry.pw_uid != os.getuid() and os.getuid() != 0:
        raise AgentError(proto.E_FAILED, f"switching to user {spec!r} needs a root agent")
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir,
                entry.pw_shell or "/bin/sh")


def exec_argv(params: dict[str, Any]) -> list[str]:
    if isinstance(params.get("shell"), str):
        return ["/bin/sh", "-c", params["shell"]]
    argv = params.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise AgentError(proto.E_BAD_REQUEST, "exec needs a non-empty argv list or a shell string")
    return argv


def child_env(user: User, additions: Any, term: str | None) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "HOME": user.home, "USER": user.name,
           "LOGNAME": user.name, "SHELL": user.shell}
    if term:
        env["TERM"] = term
    if additions is not None and not isinstance(additions, dict):
        raise AgentError(proto.E_BAD_REQUEST, "env must be an object")
    for key, value in (additions or {}).items():
        env[str(key)] = str(value)
    return env


def make_preexec(user: User, controlling_tty: bool) -> Callable[[], None]:
    """Runs in the child after setsid(): take the tty, drop privileges."""
    import fcntl
    import termios

    switch = user.uid != os.getuid()

    def preexec() -> None:
        if controlling_tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if switch:
            os.initgroups(user.name, user.gid)
            os.setgid(user.gid)
            os.setuid(user.uid)

    return preexec


def op_exec(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    argv = exec_argv(params)
    user = resolve_user(params.get("user"))
    tty = params.get("pty")
    if tty is not None and not isinstance(tty, dict):
        raise AgentError(proto.E_BAD_REQUEST, "pty must be an object {rows, cols, term}")
    term = str(tty.get("term") or "xterm-256color") if tty is not None else None
    env = child_env(user, params.get("env"), term)
    cwd = params.get("cwd") or (user.home if os.path.isdir(user.home) else "/")
    if tty is not None:
        return run_with_pty(channel, argv, env, cwd, user, tty)
    return run_with_pipes(channel, argv, env, cwd, user, bool(params.get("stdin")))


def spawn(argv: list[str], env: dict[str, str], cwd: str, user: User, tty: bool,
          **stdio: Any) -> Any:
    import subprocess

    try:
        return subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=make_preexec(user, tty), **stdio)
    except (OSError, subprocess.SubprocessError) as e:
        raise AgentError(proto.E_FAILED, f"cannot run {argv[0]}: {e}") from None


def start_thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def run_with_pipes(channel: Channel, argv: list[str], env: dict[str, str], cwd: str,
                   user: User, want_stdin: bool) -> dict[str, Any]:
    import subprocess

    stdin = subprocess.PIPE if want_stdin else subprocess.DEVNULL
    proc = spawn(argv, env, cwd, user, False, stdin=stdin, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    waiter = started(channel, proc, None)
    pumps = [start_thread(pump_output, channel, proc.stdout.fileno(), proto.STDOUT),
             start_thread(pump_output, channel, proc.stderr.fileno(), proto.STDERR)]
    feeder = None
    if want_stdin:
        feeder = start_thread(pump_input, channel, proc.stdin.fileno(), proc.stdin.close)
    status = waiter.wait()
    for pump in pumps:
        pump.join()
    result = finished(channel, proc, status, feeder)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return result


def run_with_pty(channel: Channel, argv: list[str], env: dict[str, str], cwd: str,
                 user: User, tty: dict[str, Any]) -> dict[str, Any]:
    master, slave = os.openpty()
    try:
        set_winsize(master, int(tty.get("rows", 24)), int(tty.get("cols", 80)))
        proc = spawn(argv, env, cwd, user, True, stdin=slave, stdout=slave, stderr=slave)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    waiter = started(channel, proc, master)
    feeder = start_thread(pump_input, channel, master, lambda: write_all(master, b"\x04"))
    pump = start_thread(pump_pty, channel, master, waiter.done)
    status = waiter.wait()
    pump.join()
    result = finished(channel, proc, status, feeder)
    os.close(master)
    return result


def started(channel: Channel, proc: Any, master: int | None) -> ExitWaiter:
    waiter = channel.session.agent.reaper.watch(proc.pid)

    def kill() -> None:
        if not waiter.done.is_set():  # once reaped, the pid may belong to someone else
            kill_group(proc.pid)

    channel.add_abort_hook(kill)
    channel.on_control = lambda message: control_process(proc.pid, waiter, master, message)
    channel.send_event({"event": "started", "pid": proc.pid})
    return waiter


def finished(channel: Channel, proc: Any, status: int,
             feeder: threading.Thread | None) -> dict[str, Any]:
    proc.returncode = status  # we reaped it; stops Popen from ever waiting on it
    channel.inbox.abort()  # ends the stdin pump if the host never closed stdin
    if feeder is not None:
        feeder.join(1.0)  # before its fd is closed (and its number reused)
    return exit_result(status)


def control_process(pid: int, waiter: ExitWaiter, master: int | None,
                    message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == "signal":
        if not waiter.done.is_set():
            os.kill(pid, int(message["signal"]))
    elif kind == "resize" and master is not None:
        set_winsize(master, int(message["rows"]), int(message["cols"]))
    elif kind != "resize":
        raise proto.ProtocolError(f"unknown control message {kind!r}")


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ; the kernel then sends SIGWINCH to the foreground process group."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def read_some(channel: Channel, fd: int) -> bytes | None:
    """Read at most the available credit; None when the channel is gone."""
    amount = channel.credit.take(proto.DATA_CHUNK)
    if not amount:
        return None
    try:
        data = os.read(fd, amount)
    except OSError:  # EIO from a pty master once the terminal is gone
        data = b""
    if len(data) < amount:
        channel.credit.grant(amount - len(data))
    return data


def pump_output(channel: Channel, fd: int, stream: int) -> None:
    while True:
        data = read_some(channel, fd)
        if data is None:
            return
        if not data:
            channel.send_eof(stream)
            return
        channel.send_data(stream, data)


def pump_pty(channel: Channel, master: int, exited: threading.Event) -> None:
    """Like pump_output, but a pty may never report EOF (a background job holds it)."""
    import select

    while not channel.closed:
        if not select.select([master], [], [], 0.1)[0]:
            if exited.is_set():
                break
            continue
        data = read_some(channel, master)
        if not data:
            break
        channel.send_data(proto.STDOUT, data)
    channel.send_eof(proto.STDOUT)


def pump_input(channel: Channel, fd: int, on_eof: Callable[[], None]) -> None:
    broken = False
    while True:
        try:
            chunk = channel.inbox.get()
        except Aborted:
            return
        if not chunk:
            if not broken:
                on_eof()
            return
        if not broken:
            try:
                write_all(fd, chunk)
            except OSError:
                broken = True  # the process stopped reading; keep draining the host
        channel.consumed(len(chunk))


# --------------------------------------------------------------------------- put / get


class InboxReader:
    """File-like reader over a channel's inbox, for tarfile's stream mode."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            self._pending = self._channel.inbox.get()
            if self._pending:
                self._channel.consumed(len(self._pending))
        if size < 0:
            size = len(self._pending)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def drain(self) -> None:
        while self.read(proto.DATA_CHUNK):
            pass


class ChannelWriter:
    """File-like writer that turns tarfile output into DATA frames."""

    def __init__(self, channel: Channel, stream: int) -> None:
        self._channel = channel
        self._stream = stream
        self._buffer = bytearray()
        self.total = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.total += len(data)
        if len(self._buffer) >= proto.DATA_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        self._channel.send_stream(self._stream, data)

    def close(self) -> None:
        self.flush()
        self._channel.send_eof(self._stream)


def inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_member(root: str, member: Any) -> str:
    """Where a tar member may be extracted; AgentError if it would leave root."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise AgentError(proto.E_BAD_REQUEST, f"refusing tar member {name!r}: absolute or '..'")
    target = os.path.join(root, name)
    if not inside(root, os.path.realpath(os.path.dirname(target))):
        raise AgentError(proto.E_BAD_REQUEST, f"refusing tar member {name!r}: parent escapes")
    if not member.isdir() and os.path.islink(target):
        os.unlink(target)  # never write through a link left by an earlier put
    if not inside(root, os.path.realpath(target)):
        raise AgentError(proto.E_BAD_REQUEST, f"refusing tar member {name!r}: escapes")
    if member.issym():
        link = os.path.join(os.path.dirname(target), member.linkname)
        if os.path.isabs(member.linkname) or not inside(root, os.path.realpath(link)):
            message = f"refusing symlink {name!r} -> {member.linkname!r}: escapes"
            raise AgentError(proto.E_BAD_REQUEST, message)
    if member.islnk():
        hard = member.linkname
        if hard.startswith("/") or ".." in hard.split("/"):
            raise AgentError(proto.E_BAD_REQUEST, f"refusing hard link {name!r} -> {hard!r}")
    return target


def op_put(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    import tarfile

    dest = require_path(params, "dest")
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    # We validated every member ourselves; newer Pythons' filters would drop ownership.
    trust = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    reader = InboxReader(channel)
    count = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|*") as archive:  # type: ignore[call-overload]
            for member in archive:
                check_member(root, member)
                archive.extract(member, root, set_attrs=True, numeric_owner=True, **trust)
                count += 1
    except tarfile.TarError as e:
        raise AgentError(proto.E_BAD_REQUEST, f"bad tar stream: {e}") from None
    reader.drain()
    return {"members": count}


def op_get(channel: Channel, params: dict[str, Any]) -> dict[str, Any]:
    import tarfile

    path = require_path(params, "path")
    if not os.path.lexists(path):
        raise AgentError(proto.E_NOT_FOUND, f"{path} does not exist")
    writer = ChannelWriter(channel, proto.TAR)
    arcname = os.path.basename(path.rstrip("/")) or "."
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        archive.add(path, arcname=arcname)
    writer.close()
    return {"bytes": writer.total}


def require_path(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.startswith("/"):
        raise AgentError(proto.E_BAD_REQUEST, f"{key} must be an absolute path")
    return value


OPERATIONS: dict[str, Callable[[Channel, dict[str, Any]], dict[str, Any]]] = {
    "health": op_health,
    "info": op_info,
    "exec": op_exec,
    "put": op_put,
    "get": op_get,
    "configure": op_configure,
    "ports": op_ports,
    "poweroff": op_poweroff,
}
INPUT_STREAMS = {"exec": proto.STDIN, "put": proto.TAR}  # DATA may arrive before the op runs


# --------------------------------------------------------------------------- transports


def serve_stream(agent: Agent, read: Callable[[], bytes], write: Callable[[bytes], None]) -> bool:
    """Serve one host connection until EOF; True if the host sent anything."""
    session = Session(agent, write)
    decoder = proto.FrameDecoder()
    got_data = False
    try:
        while True:
            data = read()
            if not data:
                return got_data
            got_data = True
            items = decoder.feed(data)
            if decoder.discarded:
                log(f"skipped {decoder.discarded} bytes of garbage on the stream")
                decoder.discarded = 0
            for item in items:
                session.dispatch(item)
    finally:
        session.reset()


def serve_socket(agent: Agent, sock: Any) -> None:
    def read() -> bytes:
        try:
            return bytes(sock.recv(READ_SIZE))
        except OSError:
            return b""

    serve_stream(agent, read, sock.sendall)


def serve_listener(agent: Agent, listener: Any) -> None:
    while True:
        conn, _ = listener.accept()
        log("host connected")
        try:
            serve_socket(agent, conn)
        finally:
            conn.close()
        log("host disconnected")


def find_virtio_port(name: str) -> str:
    base = "/sys/class/virtio-ports"
    for port in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if read_text(os.path.join(base, port, "name")).strip() == name:
            return "/dev/" + port
    raise FileNotFoundError(f"no virtio-serial port named {name!r}")


def serve_virtio_port(agent: Agent, name: str) -> None:
    warned = False
    while True:
        try:
            path = find_virtio_port(name)
            break
        except FileNotFoundError as e:
            if not warned:
                log(f"{e}; waiting for it")
                warned = True
            time.sleep(PORT_RETRY_SECONDS)
    fd = os.open(path, os.O_RDWR)
    log(f"serving on {path} ({name})")

    def read() -> bytes:
        try:
            return os.read(fd, READ_SIZE)
        except OSError:
            return b""

    gone_since = time.monotonic()
    while True:
        if serve_stream(agent, read, lambda data: write_all(fd, data)):
            log("host disconnected; waiting for it to come back")
            gone_since = time.monotonic()
        # Poll fast just after a disconnect: a restored snapshot's new host connects at once.
        recent = time.monotonic() - gone_since < FAST_RETRY_WINDOW
        time.sleep(FAST_RETRY_SECONDS if recent else PORT_RETRY_SECONDS)


KERNEL_CMDLINE = "/proc/cmdline"
TRANSPORT_OPTIONS = ("port-name", "unix", "fd", "vsock-port")


def transport_from_cmdline(options: dict[str, str], cmdline: str) -> dict[str, str]:
    """No transport option given: `banger.agent=vsock:PORT` (firecracker) picks vsock, else the
    virtio-serial port (qemu)."""
    if any(key in options for key in TRANSPORT_OPTIONS):
        return options
    for arg in cmdline.split():
        if arg.startswith("banger.agent=vsock:") and arg.split(":", 1)[1].isdigit():
            return dict(options, **{"vsock-port": arg.split(":", 1)[1]})
    return options


def serve(agent: Agent, options: dict[str, str]) -> None:
    import socket

    options = transport_from_cmdline(options, read_text(KERNEL_CMDLINE))
    if "fd" in options:
        serve_socket(agent, socket.socket(fileno=int(options["fd"])))
    elif "unix" in options:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = options["unix"] + ".new"
        if os.path.exists(staging):
            os.unlink(staging)
        listener.bind(staging)
        listener.listen(4)
        os.rename(staging, options["unix"])  # the path appears only once it accepts
        log("listening on " + options["unix"])
        serve_listener(agent, listener)
    elif "vsock-port" in options:
        listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        listener.bind((socket.VMADDR_CID_ANY, int(options["vsock-port"])))
        listener.listen(4)
        log("listening on vsock port " + options["vsock-port"])
        serve_listener(agent, listener)
    else:
        serve_virtio_port(agent, options.get("port-name", "banger.agent"))


USAGE = """usage: agent.py [--port-name NAME | --unix PATH | --fd N | --vsock-port PORT]
                [--pid1] [--test-root DIR]"""
VALUE_OPTIONS = ("port-name", "unix", "fd", "vsock-port", "test-root")


def parse_args(argv: list[str]) -> dict[str, str]:
    """Tiny parser: argparse costs too much startup time in a TCG guest."""
    options = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        key = arg[2:] if arg.startswith("--") else ""
        if key in VALUE_OPTIONS and args:
            options[key] = args.pop(0)
        elif key == "pid1":
            options[key] = "1"
        else:
            raise SystemExit(f"{USAGE}\nunknown or incomplete option {arg!r}")
    return options


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    agent = Agent(pid1="pid1" in options or os.getpid() == 1,
                  root=os.path.abspath(options.get("test-root", "/")))
    agent.reaper.start()
    log(f"version {AGENT_VERSION} started (pid {os.getpid()}, pid1 mode {agent.pid1})")
    while True:
        try:
            serve(agent, options)
            return 0
        except KeyboardInterrupt:
            return 130
        except Exception as e:
            log(f"transport failed: {e!r}")
            if not agent.pid1:
                return 1
            time.sleep(1)  # PID 1 must never exit: the kernel would panic


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
