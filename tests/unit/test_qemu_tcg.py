"""QEMU's TCG accelerator argument: QEMU's default translation cache unless a benchmark caps it."""

from __future__ import annotations

import pytest

from banger.vmm.qemu.argv import tcg_accel


def test_default_keeps_qemus_translation_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BANGER_TCG_TB_MIB", raising=False)
    assert tcg_accel() == "tcg,thread=multi"


@pytest.mark.parametrize(("value", "expected"), [("16", "tcg,thread=multi,tb-size=16"),
                                                 ("0", "tcg,thread=multi"),
                                                 ("-5", "tcg,thread=multi"),
                                                 ("lots", "tcg,thread=multi")])
def test_benchmark_override(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("BANGER_TCG_TB_MIB", value)
    assert tcg_accel() == expected
