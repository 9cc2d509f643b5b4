"""Apply a guest export to the host repo: commits onto a branch, changes into the work tree.

The export (checked by exportfile) holds commits.bundle (refs/banger/export/work: the guest
work tree as a commit on top of the guest HEAD; refs/banger/export/shipped: the state as
shipped on top of the base) and changes.diff (shipped state -> guest work tree). The diff
applies cleanly to the tree as it was shipped; when the host changed since, the same change
is merged three ways with the shipped state as the merge base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from banger.errors import BangerError, Conflict, InvalidArgument, NotFound, OperationFailed
from banger.textsafe import one_line
from banger.workspace import hostgit
from banger.workspace.exportfile import Export
from banger.workspace.hostgit import PLUMBING_IDENTITY, HostRepo, git, rev

# A hostile guest's bundle is checked object by object (bad trees, names, links) on the way in.
FSCK = ("-c", "transfer.fsckObjects=true", "-c", "fetch.fsckObjects=true")


@dataclass(frozen=True)
class Applied:
    branch: str | None  # where the guest's commits are, None without commits
    switched: bool  # the host HEAD moved onto that branch
    commits: int
    files: int
    conflicts: list[str]


def target_branch(export: Export, vm: str, branch: str | None, repo: Path) -> str:
    """--branch, else the branch recorded when the workspace shipped, else banger/VM.

    Never the guest's own branch: a guest must not pick which host branch moves.
    """
    name = branch or (export.record.branch if export.record else "") or f"banger/{vm}"
    if not git(repo, "check-ref-format", f"refs/heads/{name}", check=False).ok:
        raise InvalidArgument(f"invalid branch name {one_line(name, 80)!r}; pass --branch NAME")
    return name


def apply_export(export: Export, repo_path: Path, *, vm: str, branch: str | None) -> Applied:
    repo = hostgit.find_repo(repo_path)
    base = export.base
    if rev(repo.root, f"{base}^{{commit}}") is None:
        raise NotFound(f"{repo.root} lacks the workspace base commit {base[:12]}; apply in "
                       "the repository the workspace was shipped from")
    prefix = f"refs/banger/{vm}"
    try:
        _fetch_checked(repo, export.bundle, prefix)
        head = git(repo.root, "rev-parse", "-q", "--verify", f"{prefix}/work^1").stdout.strip()
    except BangerError as exc:
        raise OperationFailed(f"the export's commits did not pass git's checks: "
                              f"{one_line(exc.message)}") from None
    commits = int(git(repo.root, "rev-list", "--count", f"{base}..{head}").stdout)
    target, switched = None, False
    if commits:
        target = target_branch(export, vm, branch, repo.root)
        switched = _land_commits(repo, base, head, target)
    try:
        files, conflicts = _apply_changes(repo, export.diff, prefix)
    except BangerError as exc:
        if not commits:
            raise
        raise OperationFailed(
            f"{_landed(commits, target, switched)} in {repo.root}, but the guest's uncommitted "
            f"changes did not apply ({one_line(exc.message, 200)}); they are in {prefix}/work: "
            f"`git diff HEAD {prefix}/work` shows them") from None
    return Applied(target, switched, commits, files, conflicts)


def _fetch_checked(repo: HostRepo, bundle: Path, prefix: str) -> None:
    """Fetch the bundle's two refs under prefix once git's fsck rules passed its objects.

    git before 2.46 ignores fsckObjects for bundles, so the objects first land in a scratch
    object directory, where `index-pack --fsck-objects` checks every pack.
    """
    refs = [f"refs/banger/export/{name}" for name in ("work", "shipped")]
    fetch = (*FSCK, "-c", "fetch.unpackLimit=1", "fetch", "-q", "--no-tags",
             "--no-write-fetch-head", bundle)
    with hostgit.scratch_objects(repo) as scratch:
        git(repo.root, *fetch, *refs, env=scratch.env)  # objects only: no ref is written
        for pack in sorted((scratch.dir / "objects" / "pack").glob("*.pack")):
            git(repo.root, "index-pack", "--fsck-objects", "-o", scratch.dir / "check.idx", pack,
                env=scratch.env)
            (scratch.dir / "check.idx").unlink()
    git(repo.root, *fetch, *[f"+{ref}:{prefix}/{ref.rsplit('/', 1)[1]}" for ref in refs])


def _landed(commits: int, branch: str | None, switched: bool) -> str:
    where = "now checked out" if switched else "not checked out"
    return f"{commits} commit(s) on branch {branch} ({where})"


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
    staged = _staged_entries(repo, base, head)
    git(repo.root, "update-ref", f"refs/heads/{target}", head)
    git(repo.root, "symbolic-ref", "HEAD", f"refs/heads/{target}")
    git(repo.root, "reset", "-q")  # index follows the new HEAD; the work tree stays as it is
    if staged:  # ... and what the user had staged is staged again on top
        git(repo.root, "update-index", "-z", "--index-info", input=staged)
    return True


def _names(repo: HostRepo, *args: str) -> set[str]:
    out = git(repo.root, *args, "--no-renames", "--name-only", "-z").stdout
    return {name for name in out.split("\0") if name}


def _staged_entries(repo: HostRepo, base: str, head: str) -> bytes:
    """The user's staged changes as `update-index --index-info -z` input, checked to carry
    over to head; Conflict before anything moves when they cannot."""
    if git(repo.root, "ls-files", "-u").stdout:
        raise Conflict(f"{repo.root} has unresolved merge conflicts; resolve them, then apply "
                       "again")
    staged = _names(repo, "diff", "--cached", base)
    if not staged:
        return b""
    clash = staged & _names(repo, "diff", base, head) & _names(repo, "diff", "--cached", head)
    if clash or any("\ufffd" in name for name in staged):
        shown = one_line(", ".join(sorted(clash or staged)[:5]), 200)
        raise Conflict(f"staged changes in {repo.root} ({shown}) touch files the guest's "
                       "commits change; commit or unstage them (`git restore --staged .`), "
                       "then apply again")
    entries = {}
    for line in git(repo.root, "ls-files", "-s", "-z").stdout.split("\0"):
        if "\t" in line and (name := line.split("\t", 1)[1]) in staged:
            entries[name] = line
    removed = f"0 {'0' * len(base)}\t"  # mode 0 takes a path out of the index
    return "".join(f"{entries.get(n, removed + n)}\0" for n in sorted(staged)).encode()


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
            raise Conflict(f"cannot merge the guest's changes: {one_line(merged.stderr)}")
        result, _, rest = merged.stdout.partition("\n")
        conflicts = rest.split("\n\n", 1)[0].split("\n") if merged.returncode == 1 else []
        git(repo.root, "read-tree", "-m", "-u", ours_tree, result.strip(), env=env)
        return sorted({name for name in conflicts if name})


def summary(applied: Applied, repo: Path) -> str:
    parts = []
    if applied.branch:
        parts.append(_landed(applied.commits, applied.branch, applied.switched))
    parts.append(f"{applied.files} changed file(s) in the work tree")
    line = f"applied to {repo}: " + ", ".join(parts)
    if applied.conflicts:
        names = one_line(", ".join(applied.conflicts), 1000)  # paths the guest chose
        line += f"; conflicts to resolve (left with markers): {names}"
    return line
