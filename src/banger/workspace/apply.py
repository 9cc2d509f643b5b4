"""Apply a guest export to the host repo: commits onto a branch, changes into the work tree.

The export holds commits.bundle (refs/banger/export/work: the guest work tree as a commit on
top of the guest HEAD; refs/banger/export/shipped: the state as shipped on top of the base) and
changes.diff (shipped state -> guest work tree). The diff applies cleanly to the tree as it was
shipped; when the host changed since, the same change is merged three ways with the shipped
state as the merge base.
"""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from banger.errors import Conflict, InvalidArgument, NotFound
from banger.workspace import hostgit
from banger.workspace.hostgit import PLUMBING_IDENTITY, HostRepo, git, rev


@dataclass(frozen=True)
class Applied:
    branch: str | None  # where the guest's commits are, None without commits
    switched: bool  # the host HEAD moved onto that branch
    commits: int
    files: int
    conflicts: list[str]


def _unpack(export: Path, into: Path) -> Path:
    try:
        with tarfile.open(export) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidArgument(f"{export} is not a banger workspace export: {exc}") from None
    found = next(into.glob("*/commits.bundle"), None)
    if found is None:
        raise InvalidArgument(f"{export} is not a banger workspace export (no commits.bundle)")
    return found.parent


def apply_export(export: Path, repo_path: Path, *, vm: str, branch: str | None) -> Applied:
    repo = hostgit.find_repo(repo_path)
    with tempfile.TemporaryDirectory(prefix="banger-apply-") as tmp:
        parts = _unpack(export, Path(tmp))
        base = (parts / "base").read_text().strip()
        if rev(repo.root, f"{base}^{{commit}}") is None:
            raise NotFound(f"{repo.root} lacks the workspace base commit {base[:12]}; apply in "
                           "the repository the workspace was shipped from")
        prefix = f"refs/banger/{vm}"
        git(repo.root, "fetch", "-q", "--no-tags", "--no-write-fetch-head",
            parts / "commits.bundle", f"+refs/banger/export/*:{prefix}/*")
        head = git(repo.root, "rev-parse", f"{prefix}/work^1").stdout.strip()
        commits = int(git(repo.root, "rev-list", "--count", f"{base}..{head}").stdout)
        target, switched = None, False
        if commits:
            guest_branch = (parts / "branch").read_text().strip()
            target = branch or guest_branch or f"banger/{vm}"
            switched = _land_commits(repo, base, head, target)
        files, conflicts = _apply_changes(repo, parts / "changes.diff", prefix)
        return Applied(target, switched, commits, files, conflicts)


def _land_commits(repo: HostRepo, base: str, head: str, target: str) -> bool:
    """Point branch target at head; move the host onto it when the host HEAD is still base."""
    existing = rev(repo.root, f"refs/heads/{target}")
    if existing and not git(repo.root, "merge-base", "--is-ancestor", existing, head,
                            check=False).ok:
        raise Conflict(f"branch {target} has commits the guest's work lacks; pass --branch NAME "
                       "to put the guest's commits on a new branch")
    if repo.head != base:
        if repo.branch == target:
            raise Conflict(f"{target} moved since the workspace was shipped; pass --branch NAME "
                           "to put the guest's commits on a new branch")
        git(repo.root, "update-ref", f"refs/heads/{target}", head)
        return False
    git(repo.root, "update-ref", f"refs/heads/{target}", head)
    git(repo.root, "symbolic-ref", "HEAD", f"refs/heads/{target}")
    git(repo.root, "reset", "-q")  # index follows the new HEAD; the work tree stays as it is
    return True


def _apply_changes(repo: HostRepo, diff: Path, prefix: str) -> tuple[int, list[str]]:
    if diff.stat().st_size == 0:
        return 0, []
    files = len(git(repo.root, "apply", "--numstat", diff).stdout.splitlines())
    if git(repo.root, "apply", "--binary", "--whitespace=nowarn", diff, check=False).ok:
        return files, []
    return files, _three_way(repo, prefix)


def _three_way(repo: HostRepo, prefix: str) -> list[str]:
    """Merge the guest's changes into the host work tree, the shipped state as merge base."""
    with hostgit.scratch_objects(repo) as scratch:
        env = {**scratch.env, **PLUMBING_IDENTITY}
        ours_tree = hostgit.working_tree(repo, scratch, include_untracked=True)
        shipped = f"{prefix}/shipped"
        ours = git(repo.root, "commit-tree", "-p", shipped, "-m", "host", ours_tree,
                   env=env).stdout.strip()
        theirs = git(repo.root, "commit-tree", "-p", shipped, "-m", "guest",
                     f"{prefix}/work^{{tree}}", env=env).stdout.strip()
        merged = git(repo.root, "merge-tree", "--write-tree", "--name-only", ours, theirs,
                     env=env, check=False)
        if merged.returncode not in (0, 1):
            raise Conflict(f"cannot merge the guest's changes: {merged.stderr.strip()}")
        result, _, rest = merged.stdout.partition("\n")
        conflicts = rest.split("\n\n", 1)[0].split("\n") if merged.returncode == 1 else []
        git(repo.root, "read-tree", "-m", "-u", ours_tree, result.strip(), env=env)
        return sorted({name for name in conflicts if name})


def summary(applied: Applied, repo: Path) -> str:
    parts = []
    if applied.branch:
        where = "now checked out" if applied.switched else "not checked out"
        parts.append(f"{applied.commits} commit(s) on branch {applied.branch} ({where})")
    parts.append(f"{applied.files} changed file(s) in the work tree")
    line = f"applied to {repo}: " + ", ".join(parts)
    if applied.conflicts:
        line += f"; conflicts to resolve: {', '.join(applied.conflicts)}"
    return line
