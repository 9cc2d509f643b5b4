"""The guest half of workspaces: shell scripts run through the agent, and the calls that drive them.

Scripts report refusals as one stderr line and an exit code: 3 bad input, 4 not found,
5 conflict. Guest state lives in the repo's refs: refs/banger/base (the shipped commit) and
refs/banger/shipped-tree (the tree of what shipped, uncommitted host changes included).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import cast

from banger.agent.client import AgentClient
from banger.archive import ArchiveError
from banger.errors import BangerError, Conflict, InvalidArgument, NotFound, OperationFailed
from banger.textsafe import one_line
from banger.transfer import payload as transfer_payload
from banger.workspace import exportfile
from banger.workspace.payload import Plan

EXPORT_DIR = "/root/.cache/banger/export"
TOOLING_LOG = "/root/.cache/banger/tooling-{repo}.log"
READ_CHUNK = 1024 * 1024

_COMMON = """set -eu
fail() { echo "$2" >&2; exit "$1"; }
"""

# Args: dest force. Refuses to replace unexported guest work unless forced; leaves an empty repo.
CLEAR = _COMMON + """dest=$1; force=$2
if [ -e "$dest" ] && [ "$force" != 1 ]; then
  if [ -d "$dest/.git" ] && base=$(git -C "$dest" rev-parse -q --verify refs/banger/base); then
    idx="$dest/.git/banger-check-index"; rm -f "$idx"
    [ -f "$dest/.git/index" ] && cp "$dest/.git/index" "$idx"
    now=$(cd "$dest" && GIT_INDEX_FILE=$idx git add -A && GIT_INDEX_FILE=$idx git write-tree)
    rm -f "$idx"
    head=$(git -C "$dest" rev-parse -q --verify HEAD || true)
    shipped=$(git -C "$dest" rev-parse -q --verify refs/banger/shipped-tree || true)
    if [ "$head" != "$base" ] || [ "$now" != "$shipped" ]; then
      fail 5 "the guest workspace $dest has work not exported yet;"\\
" run \\`banger vm workspace export\\` first, or pass --force to replace it"
    fi
  elif [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
    fail 5 "$dest already exists in the guest and is not a banger workspace;"\\
" pick another --guest-path or pass --force"
  fi
fi
command -v git >/dev/null 2>&1 || fail 3 "the guest has no git; use an image with git installed"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
git init -q "$dest"
"""

# Args: dest base tree branch. Runs after the payload landed in $dest/.git.
CHECKOUT = _COMMON + """cd "$1"; base=$2; tree=$3; branch=$4
git cat-file -e "$tree^{tree}" 2>/dev/null || fail 4 "the shipped tree did not arrive in the guest"
git update-ref refs/banger/base "$base"
git update-ref refs/banger/shipped-tree "$tree"
if [ -n "$branch" ]; then
  git update-ref "refs/heads/$branch" "$base"
  git symbolic-ref HEAD "refs/heads/$branch"
else
  git update-ref --no-deref HEAD "$base"
fi
git read-tree --reset -u "$tree"
if [ "$(git rev-parse "$base^{tree}")" != "$tree" ]; then
  git read-tree "$base"
  git update-index -q --refresh >/dev/null || true
fi
"""

# Args: dest log. Prints one summary word line: none | nomise | ok | failed CODE.
BOOTSTRAP = """cd "$1"; log=$2
[ -f .mise.toml ] || [ -f .tool-versions ] || { echo none; exit 0; }
command -v mise >/dev/null 2>&1 || { echo nomise; exit 0; }
mkdir -p "$(dirname "$log")"
mise trust --quiet --all >"$log" 2>&1 || true
mise install >>"$log" 2>&1 && echo ok || echo "failed $?"
"""

# Args: dest out base-override. Never touches the repo's index, work tree or branches.
EXPORT = _COMMON + """dest=$1; out=$2; want=$3
[ -d "$dest/.git" ] || fail 4 "there is no workspace at $dest in the guest (was it removed?);"\\
" ship one with \\`banger vm workspace prepare\\`"
cd "$dest"
if [ -n "$want" ]; then
  base=$(git rev-parse -q --verify "$want^{commit}" 2>/dev/null) ||
    fail 4 "base $want is not a commit in the guest repo at $dest"
  shipped=$(git rev-parse "$base^{tree}")
else
  base=$(git rev-parse -q --verify refs/banger/base) ||
    fail 4 "$dest in the guest was not shipped by banger; pass --base COMMIT"
  git cat-file -e "$base^{commit}" 2>/dev/null ||
    fail 4 "the workspace base $base is missing from the guest repo at $dest; pass --base COMMIT"
  shipped=$(git rev-parse -q --verify refs/banger/shipped-tree) ||
    shipped=$(git rev-parse "$base^{tree}")
fi
rm -rf "$out"; mkdir -p "$out"
idx="$out/index"
[ -f .git/index ] && cp .git/index "$idx"
GIT_INDEX_FILE=$idx git add -A
work=$(GIT_INDEX_FILE=$idx git write-tree)
rm -f "$idx"
head=$(git rev-parse -q --verify HEAD) || head=$base
export GIT_AUTHOR_NAME=banger GIT_AUTHOR_EMAIL=banger@localhost
export GIT_COMMITTER_NAME=banger GIT_COMMITTER_EMAIL=banger@localhost
shipped_commit=$(git commit-tree -p "$base" -m "banger: state as shipped" "$shipped")
work_commit=$(git commit-tree -p "$head" -m "banger: guest working tree" "$work")
git update-ref refs/banger/export/shipped "$shipped_commit"
git update-ref refs/banger/export/work "$work_commit"
git bundle create -q "$out/commits.bundle" refs/banger/export/work refs/banger/export/shipped "^$base"
git diff --binary --full-index "$shipped" "$work" > "$out/changes.diff"
echo "$base" > "$out/base"
echo "$head" > "$out/head"
commits=$(git rev-list --count "$base..$head" 2>/dev/null || echo 0)
files=$(git diff --name-only "$shipped" "$work" | wc -l)
echo "$commits $files" > "$out/summary"
"""

_ERRORS: dict[int, type[BangerError]] = {3: InvalidArgument, 4: NotFound, 5: Conflict}


async def run_script(agent: AgentClient, script: str, *args: str) -> str:
    """Run a script with sh in the guest; its stdout, or the error it reported."""
    proc = await agent.exec(["sh", "-c", script, "sh", *args], env={"HOME": "/root"})
    out, err, status = await proc.communicate()
    lines = err.decode(errors="replace").strip().splitlines()
    if status.code in _ERRORS:
        raise _ERRORS[status.code](one_line(lines[-1]) if lines else "guest refused")
    if status.shell_code != 0:
        raise OperationFailed(f"workspace step failed in the guest (exit {status.shell_code}): "
                              f"{one_line(chr(10).join(lines[-3:]))}")
    return out.decode(errors="replace")


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as src:
        while chunk := src.read(READ_CHUNK):
            yield chunk


async def install(agent: AgentClient, plan: Plan, payload: Path, *, force: bool,
                  step: Callable[[str], None], disk: Path | None = None) -> None:
    """Replace plan.guest_path with a checkout of the shipped tree. `disk`: the VM's payload
    disk, which carries the git objects at disk speed when the guest can read it."""
    step("preparing the guest repo")
    await run_script(agent, CLEAR, plan.guest_path, "1" if force else "0")
    step(f"sending {os.path.getsize(payload) / 1e6:.1f} MB of git objects")
    git_dir = f"{plan.guest_path}/.git"
    if not await transfer_payload.put_tar(agent, disk, payload, git_dir):
        await agent.put(git_dir, file_chunks(payload), timeout=600)
    step(f"checking out {plan.files} files")
    await run_script(agent, CHECKOUT, plan.guest_path, plan.base, plan.shipped_tree,
                     plan.guest_branch)


def repo_label(host_repo: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(host_repo).name)


async def bootstrap(agent: AgentClient, plan: Plan) -> str | None:
    """Best-effort `mise install`; a summary line, or None when the repo pins no tools."""
    log = TOOLING_LOG.format(repo=repo_label(plan.host_repo))
    try:
        word = (await run_script(agent, BOOTSTRAP, plan.guest_path, log)).strip()
    except BangerError as exc:
        return f"tooling: bootstrap failed: {exc.message}"
    if word == "none":
        return None
    if word == "nomise":
        return "tooling: the repo pins tools but the guest has no mise; skipped"
    if word == "ok":
        return f"tooling: mise install done (log {log} in the guest)"
    return f"tooling: mise install {word}; see {log} in the guest"


async def export(agent: AgentClient, guest_path: str, base: str | None, out: Path, *,
                 record: dict[str, str] | None, origin: str) -> tuple[int, int]:
    """Check the guest's export as it streams in, then write the export file at out from
    the checked parts plus the ship-time record; (new commits, changed files)."""
    await run_script(agent, EXPORT, guest_path, EXPORT_DIR, base or "")
    chunks = cast(AsyncGenerator[bytes, None], agent.get(EXPORT_DIR))
    async with aclosing(chunks):  # a refused stream ends the agent's channel at once
        checked = await exportfile.receive(chunks, origin)
    try:
        shipped_base = (record or {}).get("base")
        if base is None and shipped_base and checked.base != shipped_base:
            raise ArchiveError(f"{origin}: its base {checked.base[:12]} is not the shipped base "
                               f"{shipped_base[:12]}; export with --base COMMIT to use another")
        data = json.dumps(record).encode() if record is not None else None
        await asyncio.to_thread(exportfile.write_file, checked, out, data)
    finally:
        checked.remove()
    await run_script(agent, 'rm -rf "$1"', EXPORT_DIR)
    return checked.commits, checked.files
