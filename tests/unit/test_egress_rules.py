"""Egress rules (issue 20): every `--allow` form, its normalised text, and one-line errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.egress_rules import (
    HOST_ALIAS,
    MAX_RULES,
    Kind,
    Policy,
    Rule,
    edit,
    parse_rule,
    parse_rules,
)
from banger.errors import InvalidArgument, NotFound
from banger.numbers import shown


@pytest.mark.parametrize(
    ("text", "kind", "target", "port", "shown"),
    [
        ("idx.test", Kind.NAME, "idx.test", None, "idx.test"),
        ("Idx.Test.:443", Kind.NAME, "idx.test", 443, "idx.test:443"),
        (" files.pythonhosted.org:0443 ", Kind.NAME, "files.pythonhosted.org", 443,
         "files.pythonhosted.org:443"),
        ("*.Example.org", Kind.WILDCARD, "example.org", None, "*.example.org"),
        ("*.example.org.:80", Kind.WILDCARD, "example.org", 80, "*.example.org:80"),
        ("203.0.113.7", Kind.NETWORK, "203.0.113.7/32", None, "203.0.113.7"),
        ("203.0.113.7:22", Kind.NETWORK, "203.0.113.7/32", 22, "203.0.113.7:22"),
        ("10.1.2.3/8:443", Kind.NETWORK, "10.0.0.0/8", 443, "10.0.0.0/8:443"),
        ("192.168.0.0/16", Kind.NETWORK, "192.168.0.0/16", None, "192.168.0.0/16"),
        ("169.254.169.254:80", Kind.NETWORK, "169.254.169.254/32", 80, "169.254.169.254:80"),
        ("host.banger.internal:8080", Kind.HOST, HOST_ALIAS, 8080, "host.banger.internal:8080"),
        ("HOST.Banger.Internal:1", Kind.HOST, HOST_ALIAS, 1, "host.banger.internal:1"),
        ("a.b:65535", Kind.NAME, "a.b", 65535, "a.b:65535"),
    ],
)
def test_every_rule_form_and_its_normalised_text(text: str, kind: Kind, target: str,
                                                port: int | None, shown: str) -> None:
    rule = parse_rule(text)
    assert rule == Rule(kind, target, port)
    assert str(rule) == shown
    assert parse_rule(str(rule)) == rule  # the shown form reads back as the same rule


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "use HOST"), ("   ", "use HOST"), ("x" * 301, "use HOST"),
        ("::1", "IPv6"), ("[::1]:80", "IPv6"), ("2001:db8::/32", "IPv6"),
        ("::ffff:1.2.3.4", "IPv6"),
        ("127.0.0.1", "loopback"), ("127.0.0.1:22", "loopback"), ("127.8.0.0/16", "loopback"),
        ("126.0.0.0/7", "loopback"), ("0.0.0.0/0", "loopback"),
        ("host.banger.internal", "needs a port"),
        ("idx.test:0", "1-65535"), ("idx.test:65536", "1-65535"), ("idx.test:", "1-65535"),
        ("idx.test: 80", "1-65535"), ("idx.test:-1", "1-65535"), ("idx.test:http", "1-65535"),
        ("localhost", "a name like"), ("*", "a name like"), ("*.com", "a name like"),
        ("**.a.com", "a name like"), ("a.*.com", "a name like"), ("a..com", "a name like"),
        ("-a.com", "a name like"), ("a-.com", "a name like"), ("a_b.com", "a name like"),
        ("a b.com", "a name like"), ("pyp\u0131.org", "a name like"),
        ("x" * 64 + ".com", "a name like"),
        ("1.2.3.4/33", "not an IPv4"), ("1.2.3.400/8", "not an IPv4"), ("a.com/8", "not an IPv4"),
    ],
)
def test_bad_rules_give_one_line_naming_the_rule(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_rule(text)
    message = info.value.message
    assert message.startswith("invalid --allow rule ") and why in message
    assert "\n" not in message and len(message) < 200
    assert shown(text) in message  # the rule, quoted and bounded


def test_a_long_bad_rule_is_quoted_bounded() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_rule("x" * 250)
    assert len(info.value.message) < 200


def test_unicode_digit_port_is_one_clear_error() -> None:
    with pytest.raises(InvalidArgument, match="1-65535"):
        parse_rule("idx.test:²")


def test_non_ascii_digit_port_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="1-65535"):
        parse_rule("idx.test:\u0663")


@pytest.mark.parametrize("text", ["host.banger.internal.:22", "HOST.banger.internal."])
def test_host_alias_with_trailing_dot_is_the_alias(text: str) -> None:
    try:
        rule = parse_rule(text)
    except InvalidArgument:
        return  # no port: refused, as without the dot
    assert rule.kind is Kind.HOST and Policy((rule,)).host_ports() == (22,)


@pytest.mark.fuzz
@given(st.text(max_size=320))
def test_fuzz_rules_only_fail_with_our_error_on_one_short_line(text: str) -> None:
    try:
        rule = parse_rule(text)
    except InvalidArgument as exc:
        assert "\n" not in exc.message
        return
    assert parse_rule(str(rule)) == rule


@pytest.mark.fuzz
@given(st.from_regex(r"\A[a-z0-9.*:/\-]{1,60}\Z"))
def test_fuzz_ascii_rules_errors_are_short(text: str) -> None:
    try:
        rule = parse_rule(text)
    except InvalidArgument as exc:
        assert "\n" not in exc.message and len(exc.message) < 200
        return
    assert str(rule).isascii() and parse_rule(str(rule)) == rule


def test_parse_rules_keeps_order_and_drops_duplicates() -> None:
    rules = parse_rules(["b.org", "A.org:443", "b.org.", "a.org:443", "1.2.3.4", "1.2.3.4/32"])
    assert [str(r) for r in rules] == ["b.org", "a.org:443", "1.2.3.4"]


def test_max_rules() -> None:
    texts = [f"10.0.{i // 256}.{i % 256}" for i in range(MAX_RULES + 1)]
    assert len(parse_rules(texts[:MAX_RULES])) == MAX_RULES
    assert len(parse_rules(texts[:MAX_RULES] + texts[:5])) == MAX_RULES  # duplicates are free
    with pytest.raises(InvalidArgument, match=rf"too many egress rules \(257\): at most {MAX_RULES}"):
        parse_rules(texts)


def test_wildcard_matches_sub_names_not_the_bare_domain() -> None:
    rule = parse_rule("*.example.org")
    assert rule.matches_name("a.example.org") and rule.matches_name("a.b.example.org")
    assert not rule.matches_name("example.org")
    assert not rule.matches_name("badexample.org")
    assert not rule.matches_name("example.org.evil.com")
    named = parse_rule("example.org")
    assert named.matches_name("example.org") and not named.matches_name("a.example.org")


def test_ports_for_name() -> None:
    policy = Policy.of(["idx.test:443", "idx.test:80", "*.idx.test:443", "any.org", "any.org:22",
                        "1.2.3.4", "host.banger.internal:8080"])
    assert policy.ports_for_name("Idx.Test.") == (443, 80)
    assert policy.ports_for_name("files.idx.test") == (443,)
    assert policy.ports_for_name("any.org") == (None, 22)
    assert policy.ports_for_name("other.org") is None
    assert policy.ports_for_name("1.2.3.4") is None  # an IP rule opens no name
    assert policy.ports_for_name("host.banger.internal") == (8080,)
    assert Policy.of(["idx.test"]).ports_for_name(HOST_ALIAS) is None
    assert Policy().ports_for_name("idx.test") is None


def test_policy_parts() -> None:
    policy = Policy.of(["host.banger.internal:80", "10.0.0.0/8:443", "a.org",
                        "host.banger.internal:81", "1.1.1.1"])
    assert policy.host_ports() == (80, 81)
    assert [str(r) for r in policy.networks()] == ["10.0.0.0/8:443", "1.1.1.1"]
    assert policy.texts() == ["host.banger.internal:80", "10.0.0.0/8:443", "a.org",
                              "host.banger.internal:81", "1.1.1.1"]


def test_edit_adds_and_removes() -> None:
    current = ["idx.test:443", "1.2.3.4"]
    assert edit(current, ["A.org", "idx.test:443"], []) == ["idx.test:443", "1.2.3.4", "a.org"]
    assert edit(current, [], ["IDX.test.:443"]) == ["1.2.3.4"]
    assert edit(current, ["idx.test:80"], ["idx.test:443"]) == ["1.2.3.4", "idx.test:80"]
    # removed, then added back at the end
    assert edit(current, ["1.2.3.4"], ["1.2.3.4/32"]) == ["idx.test:443", "1.2.3.4"]
    assert edit([], [], []) == []


def test_edit_denying_an_absent_rule_lists_the_rules() -> None:
    with pytest.raises(NotFound) as info:
        edit(["idx.test:443", "1.2.3.4"], [], ["idx.test"])
    assert info.value.message == ("no egress rule 'idx.test' to remove "
                                  "(rules: idx.test:443, 1.2.3.4)")
    with pytest.raises(NotFound, match=r"\(rules: none\)"):
        edit([], [], ["a.org"])
    with pytest.raises(InvalidArgument, match="invalid --allow rule"):
        edit(["a.org"], [], ["not a rule"])


def test_edit_respects_max_rules() -> None:
    current = [f"10.0.{i // 256}.{i % 256}" for i in range(MAX_RULES)]
    with pytest.raises(InvalidArgument, match="too many egress rules"):
        edit(current, ["a.org"], [])
    assert edit(current, ["a.org"], ["10.0.0.0"])[-1] == "a.org"


def test_a_numeric_last_label_is_no_name() -> None:
    """`127.1` is an address to the guest's libc: as a name rule it would never match."""
    for text in ("127.1", "10.1:80", "a.123"):
        with pytest.raises(InvalidArgument):
            parse_rule(text)
