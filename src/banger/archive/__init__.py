"""The one safe extractor for every archive banger unpacks (layers, .debs, bundles, guest tars).

Rules: tarfile parses the stream, never extracts; names are split into plain components
(absolute, '.', '..', empty and NUL refused); every write goes through directory fds opened
with O_NOFOLLOW|O_DIRECTORY and files are created with O_CREAT|O_EXCL|O_NOFOLLOW; a symlink
the archive made is never followed by the kernel; hard links must name a file inside the
destination; typed `Limits` cap members, bytes and header sizes while the stream is read.
"""

from banger.archive.exact import Extracted, exact_limits, extract_exact
from banger.archive.limits import GIB, KIB, MIB, ArchiveError, Limits
from banger.archive.stream import CORRUPT, TarReader, decompressed, read_tar

__all__ = [
    "CORRUPT",
    "GIB",
    "KIB",
    "MIB",
    "ArchiveError",
    "Extracted",
    "Limits",
    "TarReader",
    "decompressed",
    "exact_limits",
    "extract_exact",
    "read_tar",
]
