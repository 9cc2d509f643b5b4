"""Framed, multiplexed protocol between bangerd and the guest agent.

Stdlib-only and Python 3.7 compatible: it ships in the guest agent package, and the host
imports it from there (banger.guest.agent.protocol).  See docs/agent-protocol.md for the wire
format.

Frame = 18-byte header + payload.  Header (big endian):
    magic b"BNGR" | type u8 | stream u8 | channel u32 | length u32 | crc32 u32
The CRC covers the first 14 header bytes so a reader can find the next real
frame after garbage (resynchronisation) without trusting a corrupt length.
"""

from __future__ import annotations

import json
import struct
import zlib

TYPE_CHECKING = False  # mypy treats this name as true; the guest never imports typing
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1

MAGIC = b"BNGR"
_HEADER = struct.Struct(">4sBBIII")
_CRC_SPAN = 14  # header bytes covered by the checksum (everything before it)
HEADER_SIZE = _HEADER.size
_WINDOW = struct.Struct(">I")

MAX_PAYLOAD = 1024 * 1024  # larger frames are refused: the channel gets ERROR
DATA_CHUNK = 256 * 1024  # senders split data frames at this size (any size <= MAX_PAYLOAD is valid)
INITIAL_WINDOW = 256 * 1024  # per channel, per direction, unless HELLO agreed on another
# A host may ask for a larger window in HELLO ("window"); an agent that knows it answers with the
# window both sides then use (an older agent says nothing: INITIAL_WINDOW stays).
LARGE_WINDOW = 4 * 1024 * 1024
MAX_WINDOW = 16 * 1024 * 1024


def agreed_window(asked: object) -> int:
    """The window for a HELLO's "window" value: in range, else the default."""
    if type(asked) is int and INITIAL_WINDOW <= asked <= MAX_WINDOW:
        return asked
    return INITIAL_WINDOW

SESSION_CHANNEL = 0  # HELLO / HELLO_ACK travel here; requests use ids >= 1

# Frame types.
HELLO = 1  # host -> agent: reset the session; JSON {version, nonce}
HELLO_ACK = 2  # agent -> host: JSON {version, nonce, agent_version, pid1}
OPEN = 3  # host -> agent: JSON {op, params}; opens a channel
DATA = 4  # either way: raw bytes on `stream`
EOF = 5  # either way: no more data on `stream`
WINDOW = 6  # either way: u32 credit, the receiver consumed that many DATA bytes
CONTROL = 7  # either way: JSON; host: resize/signal, agent: started event
RESULT = 8  # agent -> host: JSON result; the agent's CLOSE follows
ERROR = 9  # JSON {code, message}; the agent's CLOSE follows
CLOSE = 10  # host: abort the channel; agent: the channel id is free again

TYPE_NAMES = {
    HELLO: "HELLO",
    HELLO_ACK: "HELLO_ACK",
    OPEN: "OPEN",
    DATA: "DATA",
    EOF: "EOF",
    WINDOW: "WINDOW",
    CONTROL: "CONTROL",
    RESULT: "RESULT",
    ERROR: "ERROR",
    CLOSE: "CLOSE",
}

# Stream ids carried by DATA and EOF frames.
STDIN = 0
STDOUT = 1
STDERR = 2
TAR = 3

# Error codes in ERROR frames.
E_BAD_FRAME = "bad_frame"
E_TOO_LARGE = "too_large"
E_BAD_REQUEST = "bad_request"
E_UNKNOWN_OP = "unknown_op"
E_NOT_FOUND = "not_found"
E_FLOW_CONTROL = "flow_control"
E_FAILED = "failed"


class ProtocolError(Exception):
    """A frame's content is malformed."""


class Frame:
    __slots__ = ("channel", "payload", "stream", "type")

    def __init__(self, ftype: int, channel: int, payload: bytes, stream: int = 0) -> None:
        self.type = ftype
        self.channel = channel
        self.payload = payload
        self.stream = stream

    def json(self) -> dict[str, Any]:
        return decode_json(self.payload)

    def __repr__(self) -> str:
        name = TYPE_NAMES.get(self.type, str(self.type))
        return f"Frame({name} ch={self.channel} stream={self.stream} len={len(self.payload)})"


class OversizedFrame:
    """A valid header announcing more than MAX_PAYLOAD bytes; its payload is skipped."""

    __slots__ = ("channel", "length", "type")

    def __init__(self, ftype: int, channel: int, length: int) -> None:
        self.type = ftype
        self.channel = channel
        self.length = length


def encode_frame(ftype: int, channel: int, payload: bytes = b"", stream: int = 0) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = _HEADER.pack(MAGIC, ftype, stream, channel, len(payload), 0)[:_CRC_SPAN]
    return head + _WINDOW.pack(zlib.crc32(head)) + payload


def encode_json(ftype: int, channel: int, obj: dict[str, Any]) -> bytes:
    return encode_frame(ftype, channel, json.dumps(obj, separators=(",", ":")).encode())


def encode_error(channel: int, code: str, message: str) -> bytes:
    return encode_json(ERROR, channel, {"code": code, "message": message})


def encode_window(channel: int, credit: int) -> bytes:
    return encode_frame(WINDOW, channel, _WINDOW.pack(credit))


def decode_window(payload: bytes) -> int:
    if len(payload) != _WINDOW.size:
        raise ProtocolError(f"WINDOW payload must be 4 bytes, got {len(payload)}")
    return int(_WINDOW.unpack(payload)[0])


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(f"malformed JSON payload: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("JSON payload must be an object")
    return obj


class FrameDecoder:
    """Incremental parser: feed() bytes, get frames back.

    Garbage (bad magic or header checksum) is skipped by scanning for the next
    valid header; the count of skipped bytes accumulates in `discarded`.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.discarded = 0
        self._buf = bytearray()
        self._skip = 0  # payload bytes of an oversized frame still to drop

    def reset(self) -> None:
        self._buf = bytearray()
        self._skip = 0

    @property
    def buffered(self) -> int:
        """Bytes kept for an incomplete frame: always below HEADER_SIZE + max_payload."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data  # the usual case: parse the read itself, keep only an incomplete tail
        out: list[Frame | OversizedFrame] = []
        view = memoryview(buf)
        try:
            pos = self._parse(buf, view, out)
        finally:
            view.release()  # a bytearray with a live view cannot be resized
        if buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        return out

    def _parse(self, buf: bytes | bytearray, view: memoryview,
               out: list[Frame | OversizedFrame]) -> int:
        """Frames from buf into out; how many bytes were used up."""
        pos = 0
        while True:
            if self._skip:
                dropped = min(self._skip, len(buf) - pos)
                pos += dropped
                self._skip -= dropped
                if self._skip:
                    break
            if len(buf) - pos < HEADER_SIZE:
                break
            if buf[pos : pos + 4] != MAGIC:
                pos = self._scan(buf, pos)
                continue
            header = bytes(view[pos : pos + HEADER_SIZE])
            _, ftype, stream, channel, length, crc = _HEADER.unpack(header)
            if zlib.crc32(header[:_CRC_SPAN]) != crc:
                self.discarded += 1
                pos += 1
                continue
            if length > self.max_payload:
                out.append(OversizedFrame(ftype, channel, length))
                pos += HEADER_SIZE
                self._skip = length
                continue
            end = pos + HEADER_SIZE + length
            if end > len(buf):
                break
            out.append(Frame(ftype, channel, bytes(view[pos + HEADER_SIZE : end]), stream))
            pos = end
        return pos

    def _scan(self, buf: bytes | bytearray, pos: int) -> int:
        """Position of the next possible magic after pos (keeps a partial magic at the end)."""
        found = buf.find(MAGIC, pos + 1)
        if found < 0:
            found = max(pos + 1, len(buf) - len(MAGIC) + 1)
        self.discarded += found - pos
        return found
