"""Typed configuration: one loader, one place for defaults."""

from banger.config.model import Config, FileSync, VmDefaults, load_config
from banger.config.sizes import format_size_mib, parse_size_mib

__all__ = ["Config", "FileSync", "VmDefaults", "format_size_mib", "load_config", "parse_size_mib"]
