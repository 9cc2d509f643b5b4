"""What ships: a plan from the host repo and options, and the payload tar built from it.

The payload is one tar extracted into the guest repo's .git: a pack holding the base commit
(its history when full) and the tree of the host's working state, plus `shallow` when shallow.
The guest checks that tree out, so modes, symlinks, binaries, renames and deletions arrive
exactly as git recorded them.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from banger.errors import InvalidArgument
from banger.workspace import hostgit
from banger.workspace.hostgit import HostRepo

DEFAULT_GUEST_PATH = "/root/repo"
_BRANCH_OK = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<![./])$")


@dataclass(frozen=True)
class ShipOptions:
    guest_path: str = DEFAULT_GUEST_PATH
    include_untracked: bool = False
    full_history: bool = False
    branch: str | None = None
    from_ref: str | None = None
    bootstrap: bool = True


@dataclass(frozen=True)
class Plan:
    """Everything the daemon and the guest need besides the pack itself."""

    host_repo: str
    host_head: str
    base: str
    shipped_tree: str
    guest_path: str
    guest_branch: str  # "" ships a detached HEAD
    subdir: str
    shallow: bool
    include_untracked: bool
    bootstrap: bool
    files: int
    bytes: int
    changes: list[str]

    def manifest(self) -> dict[str, object]:
        return asdict(self)


def check_guest_path(path: str) -> str:
    clean = posixpath.normpath(path)
    if not path.startswith("/") or not clean.startswith("/root/") or ".." in path.split("/"):
        raise InvalidArgument(f"guest path {path!r} must be a directory under /root, "
                              "e.g. /root/repo")
    return clean


def _check_branch(name: str) -> str:
    if not _BRANCH_OK.fullmatch(name) or name.endswith(".lock") or "@{" in name:
        raise InvalidArgument(f"invalid branch name {name!r}")
    return name


def _base(repo: HostRepo, opts: ShipOptions) -> str:
    if opts.from_ref is None:
        return repo.head
    if opts.branch is None:
        raise InvalidArgument("--from needs --branch NAME: it says where the new branch starts")
    commit = hostgit.rev(repo.root, f"{opts.from_ref}^{{commit}}")
    if commit is None:
        raise InvalidArgument(f"--from {opts.from_ref!r} is not a commit in {repo.root}")
    return commit


@dataclass(frozen=True)
class Shipment:
    plan: Plan
    files: list[str]  # every path the guest work tree will hold
    payload: Path | None  # the tar for the guest's .git; None for a dry run


@contextmanager
def prepared(path: str | Path, opts: ShipOptions, *, build: bool = True) -> Iterator[Shipment]:
    """Plan the shipment (and build its payload tar); all of it vanishes when the block ends."""
    repo = hostgit.find_repo(path)
    guest_path = check_guest_path(opts.guest_path)
    if opts.branch is not None:
        _check_branch(opts.branch)
    hostgit.refuse_submodules(repo)
    base = _base(repo, opts)
    with hostgit.scratch_objects(repo) as scratch:
        if opts.from_ref is None:
            tree = hostgit.working_tree(repo, scratch, include_untracked=opts.include_untracked)
        else:
            tree = hostgit.rev(repo.root, f"{base}^{{tree}}") or ""
        files = hostgit.tree_files(repo, tree, scratch.env)
        plan = Plan(
            host_repo=str(repo.root), host_head=repo.head, base=base, shipped_tree=tree,
            guest_path=guest_path, guest_branch=opts.branch or repo.branch or "",
            subdir=repo.subdir, shallow=not opts.full_history,
            include_untracked=opts.include_untracked, bootstrap=opts.bootstrap,
            files=len(files), bytes=hostgit.tree_size(repo, tree, scratch.env),
            changes=hostgit.changed_paths(repo, base, tree, scratch.env))
        yield Shipment(plan, files, _payload(repo, plan, scratch) if build else None)


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _payload(repo: HostRepo, plan: Plan, scratch: hostgit.Scratch) -> Path:
    """The tar to extract into the guest's .git: the pack, its index, and `shallow`."""
    packs = scratch.dir / "packs"
    packs.mkdir()
    pack = hostgit.write_pack(repo, scratch.env, [plan.base], plan.shipped_tree,
                              shallow=plan.shallow, out_dir=packs)
    out = scratch.dir / "payload.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for part in (pack, pack.with_suffix(".idx")):
            tar.add(part, arcname=f"objects/pack/{part.name}", filter=_as_root)
        if plan.shallow:
            shallow = scratch.dir / "shallow"
            shallow.write_text(plan.base + "\n")
            tar.add(shallow, arcname="shallow", filter=_as_root)
    return out
