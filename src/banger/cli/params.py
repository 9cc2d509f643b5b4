"""Click parameter types for numbers (strict ASCII decimal, bounded, one clear usage line, exit
2) and the command class that hands everything after `--` to the guest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def max_vcpu() -> int:
    from banger.config.model import MAX_VCPU  # imported only when --vcpu is given: keeps CLI fast

    return MAX_VCPU


class WholeNumber(click.ParamType[int]):
    """A whole number in low..high (high may be computed when needed)."""

    name = "integer"

    def __init__(self, what: str, low: int, high: int | Callable[[], int]) -> None:
        self.what, self.low, self.high = what, low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # a default from the code, not user input
        from banger.errors import InvalidArgument
        from banger.numbers import parse_int

        high = self.high if isinstance(self.high, int) else self.high()
        try:
            return parse_int(str(value), what=self.what, low=self.low, high=high)
        except InvalidArgument as exc:
            self.fail(exc.message, param, ctx)


class Seconds(click.ParamType[float]):
    """A duration in seconds such as 20 or 2.5, at most `high`."""

    name = "seconds"

    def __init__(self, what: str, high: float) -> None:
        self.what, self.high = what, high

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        from banger.errors import InvalidArgument
        from banger.numbers import parse_seconds

        try:
            return parse_seconds(str(value), what=self.what, high=self.high)
        except InvalidArgument as exc:
            self.fail(exc.message, param, ctx)


VCPU = WholeNumber("vcpu", 1, max_vcpu)
TIMEOUT = Seconds("timeout", 3600.0)


def checked(parse: Callable[[str], object], values: tuple[str, ...], hint: str) -> None:
    """Each value parsed before anything is sent to the daemon; a bad one is click's error."""
    from banger.errors import InvalidArgument

    try:
        for value in values:
            parse(value)
    except InvalidArgument as exc:
        raise click.BadParameter(exc.message, param_hint=hint) from None


def check_publish(specs: tuple[str, ...]) -> None:
    from banger.net.plan import parse_publish

    checked(parse_publish, specs, "-p/--publish")


def check_allow(rules: tuple[str, ...], hint: str = "--allow") -> None:
    from banger.egress_rules import parse_rule

    checked(parse_rule, rules, hint)


class DashDashCommand(click.Command):
    """Everything after `--` is the guest command, untouched by option parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["guest_command"] = args[cut + 1:]
            args = args[:cut]
        else:
            ctx.meta["guest_command"] = []
        return super().parse_args(ctx, args)
