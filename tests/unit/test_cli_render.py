"""banger's own output shows guest text inert: no terminal controls, markup as literal text
(issue 12, item 11). A command's own output under `vm exec` is not covered: it stays raw."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rich.console import Console

from banger.cli import output, session
from banger.cli.progress_view import ProgressView
from banger.errors import OperationFailed

TITLE = "\x1b]0;X\x07[red]Y"  # sets the terminal title, then rich markup
HOSTILE = [TITLE, "[/]", "a\x9b31mb", "[bold]z[/bold]", "ok\rfake", "x\u202eevil", "two\nlines"]
CONTROLS = ["\x1b", "\x07", "\x9b", "\r", "\u202e"]


def assert_inert(text: str) -> None:
    for c in CONTROLS:
        assert c not in text, (c, text)
    assert "[red]Y" in text and "[/]" in text and "[bold]z[/bold]" in text


def test_table_cells_are_literal_text(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_table(["VM", "PROCESS"], [[f"vm{i}", s] for i, s in enumerate(HOSTILE)])
    out = capsys.readouterr().out
    assert_inert(out)
    assert "]0;X[red]Y" in out  # the text stays as the guest wrote it, only controls go


def test_error_and_warning_lines(capsys: pytest.CaptureFixture[str]) -> None:
    for text in HOSTILE:
        output.error(text)
        output.warn(text)
    err = capsys.readouterr().err
    assert_inert(err)
    assert all(line.startswith(("error: ", "warning: ")) for line in err.splitlines())


def test_daemon_error_reaches_the_terminal_clean(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def fail(method: str, params: dict[str, Any] | None = None) -> Any:
        raise OperationFailed(f"qemu exited during boot: {' | '.join(HOSTILE)}\nerror: forged",
                              op_id="op-1")

    from banger.cli.main import main

    monkeypatch.setattr(session, "call", fail)
    monkeypatch.setattr(sys, "argv", ["banger", "vm", "list"])
    with pytest.raises(SystemExit) as code:
        main()
    err = capsys.readouterr().err
    assert code.value.code == 1 and len(err.splitlines()) == 1  # no forged second line
    assert_inert(err)


def test_several_vms_failing_print_clean_lines(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from banger.cli.vm_cmds import for_each_vm

    def act(vm: str) -> str:
        if vm == "bad":
            raise OperationFailed(TITLE + " [/] [bold]z[/bold]\nerror: forged")
        return f"{vm}\x1b[2J stopped"

    with pytest.raises(SystemExit):
        for_each_vm(("good", "bad"), act)
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out and captured.out.startswith("good")
    assert_inert(captured.err)
    assert len(captured.err.splitlines()) == 1


def progress_events() -> list[dict[str, Any]]:
    return [{"type": "info", "message": text} for text in HOSTILE] + [
        {"type": "progress", "stage": text, "fraction": 0.5, "message": text} for text in HOSTILE]


def test_progress_view_renders_guest_text_inert() -> None:
    buf = io.StringIO()
    with ProgressView(Console(file=buf, force_terminal=False, width=400)) as view:
        for event in progress_events():
            view.update(event)
    assert_inert(buf.getvalue())


def test_plain_progress_lines_are_clean(capsys: pytest.CaptureFixture[str]) -> None:
    plain = session._PlainProgress()
    for event in progress_events():
        plain(event)
    err = capsys.readouterr().err
    assert_inert(err)
    assert "error: forged" not in err


@pytest.mark.fuzz
@given(st.lists(st.text(max_size=30), min_size=1, max_size=4))
@example(["\t1"])  # a tab made rich cut the cell to '…'
def test_fuzz_table_never_crashes_or_leaks_controls(cells: list[str]) -> None:
    buf = io.StringIO()
    real = sys.stdout
    sys.stdout = buf
    try:
        output.print_table([f"C{i}" for i in range(len(cells))], [cells])
    finally:
        sys.stdout = real
    text = buf.getvalue()
    assert not any(c in text for c in CONTROLS)
    for cell in cells:  # every word of every cell is shown, markup included
        for word in cell.split():
            if word.isprintable() and word.isascii():
                assert word in text
