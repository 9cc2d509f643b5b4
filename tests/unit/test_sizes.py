import pytest

from banger.config.sizes import format_size_mib, parse_size_bytes, parse_size_mib
from banger.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512", 512), (512, 512), ("1G", 1024), ("1g", 1024), ("1GiB", 1024), ("1GB", 1024),
        ("2048M", 2048), ("2048MiB", 2048), ("1.5G", 1536), ("1T", 1024 * 1024),
        ("1024K", 1), ("1K", 1), (" 8G ", 8192), ("4096KiB", 4),
    ],
)
def test_parses_sizes(text: str | int, mib: int) -> None:
    assert parse_size_mib(text) == mib


def test_bytes_and_rounding() -> None:
    assert parse_size_bytes("1K") == 1024
    assert parse_size_bytes("10B") == 10
    assert parse_size_mib("1B") == 1  # rounded up, never to zero


@pytest.mark.parametrize("bad", ["", "abc", "-1G", "0", "0G", "1X", "G", "1iB", "1.2.3G", True, 0, -5])
def test_rejects_bad_sizes(bad: str | int) -> None:
    with pytest.raises(InvalidArgument, match="size"):
        parse_size_mib(bad)


def test_format() -> None:
    assert format_size_mib(8192) == "8G"
    assert format_size_mib(1536) == "1536M"
