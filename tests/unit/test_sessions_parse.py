"""Hostile session answers from a guest are refused with one clear error; the guest's log ring keeps
at most its cap, drops the oldest bytes first and reads gaplessly by absolute offset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from banger.agent.results import decode
from banger.agent.sessions import SessionInfo, SessionList, check_name, final_state
from banger.errors import InvalidArgument, OperationFailed
from banger.guest.agent.sessions_log import LogWriter, bounds, read_at, segments, tail_offset

GOOD: dict[str, Any] = {"name": "web", "state": "running", "argv": ["sh", "-c", "x"],
                        "cwd": "/root", "tty": False, "pid": 42, "started": 1.0, "log_cap": 8192,
                        "log_start": 0, "log_end": 10}


def answer(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_a_good_answer_decodes() -> None:
    info = final_state(answer())
    assert (info.name, info.state, info.pid, info.exit_code) == ("web", "running", 42, None)


@pytest.mark.parametrize("changes", [
    {"name": "\x1b[31mred"}, {"name": "a" * 64}, {"name": "Web"}, {"name": "-x"}, {"name": "123"},
    {"name": 7}, {"state": "zombie"}, {"pid": 0}, {"pid": 2**40}, {"argv": "sh"},
    {"argv": ["x"] * 5000}, {"cwd": "/" * 5000}, {"exit_code": 256, "state": "exited"},
    {"signal": 65, "state": "exited"}, {"exit_code": 1, "signal": 9, "state": "exited"},
    {"exit_code": 0}, {"log_start": 11}, {"log_end": -1}, {"started": -5}, {"tty": "yes"},
])
def test_hostile_answers_are_one_clear_error(changes: dict[str, Any]) -> None:
    with pytest.raises(OperationFailed, match="the guest agent sent an invalid session"):
        final_state(answer(**changes))


def test_a_list_is_bounded_and_each_entry_checked() -> None:
    many = json.dumps({"sessions": [GOOD] * 1025}).encode()
    with pytest.raises(OperationFailed, match="invalid session list"):
        decode(many, SessionList, "session list")
    bad = json.dumps({"sessions": [GOOD, {**GOOD, "name": "a\nb"}]}).encode()
    with pytest.raises(OperationFailed):
        decode(bad, SessionList, "session list")
    assert len(decode(json.dumps({"sessions": [GOOD]}).encode(), SessionList, "x").sessions) == 1


def test_user_given_names_follow_the_vm_name_rule() -> None:
    assert check_name("dev-server") == "dev-server"
    for bad in ("", "Dev", "a_b", "-a", "a-", "42", "a" * 64, "x\x1b"):
        with pytest.raises(InvalidArgument):
            check_name(bad)


def test_the_log_ring_holds_its_cap_and_reads_by_absolute_offset(tmp_path: Path) -> None:
    writer = LogWriter(str(tmp_path), 100)
    data = b"".join(b"%03d\n" % i for i in range(200))  # 800 bytes
    for start in range(0, len(data), 7):
        writer.append(data[start:start + 7])
    writer.close()
    first, end = bounds(str(tmp_path))
    assert end == 800 and 50 <= end - first <= 100
    assert sum(size for _, size, _ in segments(str(tmp_path))) <= 100
    assert len(segments(str(tmp_path))) <= 2
    at, kept = read_at(str(tmp_path), 0, 1000)  # asked for dropped bytes: starts at the oldest
    assert kept and kept == data[first:first + len(kept)]  # one read stays in one segment
    assert at == first
    got, offset = b"", at
    while chunk := read_at(str(tmp_path), offset, 9)[1]:
        got += chunk
        offset += len(chunk)
    assert got == data[first:]
    assert data[tail_offset(str(tmp_path), 3):] == b"197\n198\n199\n"
    assert tail_offset(str(tmp_path), 10_000) == first
    reopened = LogWriter(str(tmp_path), 100)  # the agent comes back to an existing log
    reopened.append(b"more\n")
    assert bounds(str(tmp_path))[1] == 805
    reopened.close()


def test_session_info_is_frozen_and_typed() -> None:
    info = final_state(answer(state="exited", signal=9, ended=2.0))
    assert isinstance(info, SessionInfo) and info.signal == 9 and not info.lost
