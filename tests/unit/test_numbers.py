"""Numbers users type: strict ASCII decimal, bounded, one clear line (issue 12, item 13)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.config.sizes import parse_size_bytes
from banger.errors import InvalidArgument
from banger.net.plan import parse_publish
from banger.numbers import parse_int, parse_seconds
from tests.conftest import Banger

HUGE = "9" * 400
MAX_SIZE = 1024**5  # 1024T


@pytest.mark.parametrize("bad", ["²", "٣", "1_000", "+5", "-1", "0x10", "1e3", "", " ", HUGE,
                                 "10" * 16])
def test_parse_int_takes_ascii_digits_only(bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid vcpu .*: expected a whole number in 1\.\.64"):
        parse_int(bad, what="vcpu", low=1, high=64)


def test_parse_int_range_and_short_messages() -> None:
    assert parse_int(" 42 ", what="vcpu", low=1, high=64) == 42
    with pytest.raises(InvalidArgument, match=r"^invalid vcpu 65: use 1\.\.64$"):
        parse_int("65", what="vcpu", low=1, high=64)
    with pytest.raises(InvalidArgument) as info:
        parse_int(HUGE, what="vcpu", low=1, high=64)
    assert len(info.value.message) < 100  # the user's 400 digits are not echoed back


@pytest.mark.parametrize("bad", ["²:80", "80:²", "0:80", "70000:80", "80:0", "\u0661:80", "80",
                                 ":80", "8080:", "1_0:80", f"{HUGE}:80", "80:80:80"])
def test_publish_rejects_bad_ports(bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"HOSTPORT:GUESTPORT with ports in 1\.\.65535"):
        parse_publish(bad)


def test_publish_accepts_the_range_ends() -> None:
    assert str(parse_publish("1:65535")) == "1:65535"


@pytest.mark.parametrize("bad", [HUGE, f"{HUGE}G", "²G", "\u0661G", "1e5G", "1.5.5G", "2000T",
                                 "1" + "0" * 30, 2**80])
def test_sizes_reject_unicode_and_huge(bad: str | int) -> None:
    with pytest.raises(InvalidArgument, match="invalid memory"):
        parse_size_bytes(bad, what="memory")


def test_sizes_are_exact() -> None:
    assert parse_size_bytes("1.5G") == 1536 * 1024**2
    assert parse_size_bytes("0.1M") == 104857  # truncated, never rounded through a float
    assert parse_size_bytes("1024T") == MAX_SIZE


def test_seconds() -> None:
    assert parse_seconds("2.5", what="timeout", high=60) == 2.5
    for bad in ("nan", "inf", "1e400", "-1", "²", "61"):
        with pytest.raises(InvalidArgument, match="invalid timeout"):
            parse_seconds(bad, what="timeout", high=60)


@pytest.mark.fuzz
@given(st.text(max_size=40))
def test_fuzz_numbers_only_fail_with_our_error(text: str) -> None:
    for parse in (lambda t: parse_int(t, what="n", low=1, high=64),
                  lambda t: parse_size_bytes(t, what="size"), parse_publish,
                  lambda t: parse_seconds(t, what="timeout", high=60)):
        try:
            value = parse(text)
        except InvalidArgument as exc:
            assert "\n" not in exc.message and len(exc.message) < 200
            continue
        if isinstance(value, int):
            assert 0 < value <= MAX_SIZE
        assert text.strip().isascii()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory", HUGE], "Invalid value for --memory: invalid memory"),
        (["-p", "²:80"], "invalid port mapping '²:80'"),
        (["-p", "0:80"], "ports in 1..65535"),
        (["-p", "70000:80"], "ports in 1..65535"),
        (["--vcpu", str(10**30)], "expected a whole number in 1..64"),
        (["--vcpu", "\u0661"], "expected a whole number in 1..64"),
        (["--disk", "²G"], "invalid disk"),
    ],
)
def test_cli_number_errors_are_one_usage_line(banger: Banger, args: list[str],
                                              message: str) -> None:
    res = banger.run("vm", "create", "--no-start", "--name", "n1", *args)
    assert (res.returncode, res.stdout) == (2, "")
    assert message in res.stderr and res.stderr.startswith("error: ")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert banger.daemon_pid() is None  # refused before anything reached the daemon


@pytest.mark.parametrize("args", [["vm", "stop", "x", "--timeout", "nan"],
                                  ["daemon", "logs", "-n", HUGE],
                                  ["vm", "set", "x", "--vcpu", "0"],
                                  ["vm", "template", "build", "--vcpu", "²"]])
def test_other_numeric_flags_are_strict(banger: Banger, args: list[str]) -> None:
    res = banger.run(*args)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
