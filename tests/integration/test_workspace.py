"""Workspaces on real VMs: ship a repo in, work in the guest, export, apply on the host."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import workspace_attack
from tests.conftest import Banger
from tests.vmtest import SLIM, vm_home, vm_lock

pytestmark = [pytest.mark.vm]

VM = "ws"
LIST_FILES = "find . -path ./.git -prune -o \\( -type f -o -type l \\) -print | cut -c3- | sort"
HOST_ONLY = "-o -name .env -o -name debug.log"  # files the host keeps that never shipped


def describe(skip: str = "") -> str:
    """One line per file: path, mode and content digest (the target for a symlink)."""
    return (f"find . \\( -path ./.git {skip} \\) -prune -o \\( -type f -o -type l \\) -print | "
            "cut -c3- | sort | while read -r f; do if [ -L \"$f\" ]; then "
            "echo \"$f link $(readlink \"$f\")\"; else "
            "echo \"$f $(stat -c %a \"$f\") $(sha1sum < \"$f\" | cut -c1-40)\"; fi; done")


def sh(cmd: str, cwd: Path) -> str:
    return subprocess.run(cmd, shell=True, cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def guest(b: Banger, script: str, vm: str = VM) -> str:
    res = b.run("vm", "exec", vm, "--", "sh", "-c", script, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def make_repo(root: Path) -> Path:
    """A repo with binaries, a symlink, an executable, then renames, deletions, dirt, secrets."""
    repo = root / "proj"
    repo.mkdir(parents=True)
    sh("git init -q -b main && git config user.email dev@example.com && "
       "git config user.name Dev", repo)
    (repo / "a.txt").write_text("".join(f"line {i}\n" for i in range(40)))
    (repo / "old.txt").write_text("rename me\n" * 30)
    (repo / "gone.txt").write_text("delete me\n")
    (repo / "blob.bin").write_bytes(os.urandom(5000) + b"\0\xff")
    (repo / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "sub").mkdir()
    (repo / "sub" / "deep.txt").write_text("deep\n")
    os.symlink("a.txt", repo / "link")
    (repo / ".gitignore").write_text("*.log\n")
    sh("git add -A && git commit -qm first && echo second >> a.txt && git commit -qam second",
       repo)
    sh("git mv old.txt renamed.txt && git rm -q gone.txt && echo dirty >> sub/deep.txt", repo)
    (repo / "blob.bin").write_bytes(os.urandom(700) + b"\0")
    (repo / ".env").write_text("SECRET=1\n")  # untracked: stays home by default
    (repo / "debug.log").write_text("ignored\n")  # ignored: never ships
    return repo


@pytest.fixture(scope="module")
def vb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banger]:
    home_files = tmp_path_factory.mktemp("home")
    (home_files / "tool.conf").write_text("setting = 1\n")
    gitconfig = home_files / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Host Person\n\temail = host@example.com\n")
    with vm_lock(), vm_home(SLIM) as b:
        with open(b.home / "config" / "config.toml", "a") as config:
            config.write(f'\n[[file_sync]]\nhost = "{home_files / "tool.conf"}"\n'
                         'guest = "~/.config/tool.conf"\nmode = "0640"\n'
                         f'\n[[file_sync]]\nhost = "{home_files / "missing"}"\n'
                         'guest = "~/missing"\n')
        b.env["GIT_CONFIG_GLOBAL"] = str(gitconfig)
        b.run("vm", "create", "--name", VM, check=True, timeout=180)
        yield b


def test_file_sync_and_git_identity_at_start(vb: Banger) -> None:
    out = guest(vb, "stat -c '%a %U' ~/.config/tool.conf; cat ~/.config/tool.conf; "
                    "git config --global user.name; git config --global user.email; "
                    "test ! -e ~/missing && echo no-missing")
    assert out.splitlines() == ["640 root", "setting = 1", "Host Person", "host@example.com",
                                "no-missing"]


def test_bad_input_is_one_line_each(vb: Banger, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    bare = tmp_path / "bare.git"
    sh(f"git init -q --bare {bare}", tmp_path)
    unborn = tmp_path / "unborn"
    sh(f"git init -q {unborn}", tmp_path)
    repo = make_repo(tmp_path)
    cases = {
        str(plain): "is not in a git repository",
        str(bare): "is a bare repository",
        str(unborn): "no commits yet (unborn HEAD)",
        str(repo / ".git" / "objects"): "inside a .git directory",
        str(tmp_path / "nope"): "does not exist",
    }
    for path, message in cases.items():
        res = vb.run("vm", "workspace", "prepare", VM, path)
        assert res.returncode != 0 and message in res.stderr, (path, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = vb.run("vm", "workspace", "prepare", VM, str(repo), "--guest-path", "/etc/repo")
    assert res.returncode != 0 and "must be a directory under /root" in res.stderr
    res = vb.run("vm", "run", "--rm", str(plain), "--", "true")
    assert res.returncode != 0 and "is not in a git repository" in res.stderr
    names = [line.split()[1] for line in vb.run("vm", "list").stdout.splitlines()[1:]]
    assert names == [VM]  # the refused `vm run` created no VM
    res = vb.run("vm", "workspace", "export", VM, "-o", str(tmp_path / "x.tar"))
    assert res.returncode != 0 and "has no workspace" in res.stderr


def test_ship_work_export_apply_round_trip(vb: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    dry = vb.run("vm", "workspace", "prepare", VM, str(repo), "--dry-run", check=True)
    listed = sorted(dry.stdout.split())
    assert ".env" not in listed and "debug.log" not in listed and "renamed.txt" in listed
    read_before = int(guest(vb, "cat /sys/block/vdb/stat").split()[2])
    res = vb.run("vm", "workspace", "prepare", VM, str(repo), timeout=180, check=True)
    base = res.stdout.strip()
    assert base == git(repo, "rev-parse", "HEAD")
    assert int(guest(vb, "cat /sys/block/vdb/stat").split()[2]) > read_before  # payload disk
    assert guest(vb, "pwd").strip() == "/root/repo"  # exec starts in the workspace
    assert guest(vb, LIST_FILES).split() == listed  # --dry-run listed exactly what shipped
    assert guest(vb, describe()) == sh(describe(HOST_ONLY), repo)
    assert guest(vb, "git rev-parse HEAD; git symbolic-ref --short HEAD").split() == [base, "main"]
    # Work in the guest: a commit, then uncommitted edits, a new binary, a deletion, a mode.
    guest(vb, "git add -A && git commit -qm 'guest commit' && echo guest >> a.txt && "
              "printf '\\000\\001bin' > new.bin && rm run.sh && chmod +x sub/deep.txt && "
              "mv renamed.txt moved.txt")
    guest_tree = guest(vb, describe())
    guest_head = guest(vb, "git rev-parse HEAD").strip()
    guest_index = guest(vb, "git status --porcelain")
    export = tmp_path / "work.tar"
    vb.run("vm", "workspace", "export", VM, "-o", str(export), check=True, timeout=120)
    assert guest(vb, "git status --porcelain") == guest_index  # export left the guest alone
    res = vb.run("vm", "workspace", "apply", VM, "--file", str(export), check=True)
    assert "1 commit(s) on branch main (now checked out)" in res.stdout
    assert git(repo, "rev-parse", "HEAD") == guest_head
    assert git(repo, "log", "-1", "--format=%s") == "guest commit"
    assert sh(describe(HOST_ONLY), repo) == guest_tree
    assert (repo / ".env").read_text() == "SECRET=1\n"  # untouched host files stay


def test_three_way_keeps_host_and_guest_changes(vb: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    vb.run("vm", "workspace", "prepare", VM, str(repo), "--guest-path", "/root/three",
           "--branch", "feature", timeout=180, check=True)
    guest(vb, "cd /root/three && sed -i 's/^line 35$/line 35 guest/' a.txt")
    # The host changed the same file since shipping, inside the guest hunk's context.
    text = (repo / "a.txt").read_text().replace("line 32\n", "line 32 host\n")
    (repo / "a.txt").write_text(text)
    res = vb.run("vm", "workspace", "apply", VM, timeout=120)
    assert res.returncode == 0, res.stderr
    merged = (repo / "a.txt").read_text()
    assert "line 32 host\n" in merged and "line 35 guest\n" in merged and "<<<<" not in merged
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"  # no guest commits: no switch


def test_exec_warns_when_head_moved_and_sync_reships(vb: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    sh("git add -A && git commit -qm settle", repo)
    vb.run("vm", "workspace", "prepare", VM, str(repo), "--force", timeout=180, check=True)
    res = vb.run("vm", "exec", VM, "--", "true")
    assert res.returncode == 0 and "moved" not in res.stderr
    sh("echo later > later.txt && git add later.txt && git commit -qm later", repo)
    res = vb.run("vm", "exec", VM, "--", "true")
    assert "HEAD moved since it was shipped" in res.stderr and "--sync" in res.stderr
    res = vb.run("vm", "exec", VM, "--sync", "--", "cat", "later.txt", timeout=180)
    assert res.returncode == 0 and res.stdout == "later\n", res.stderr
    guest(vb, "echo unsaved > wip.txt")
    res = vb.run("vm", "exec", VM, "--sync", "--", "true", timeout=180)
    assert res.returncode != 0 and "has work not exported yet" in res.stderr


def test_untracked_and_bootstrap(vb: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / ".tool-versions").write_text("python 3.11\n")
    guest(vb, "printf '#!/bin/sh\\necho mise \"$@\"\\n' > /usr/local/bin/mise && "
              "chmod +x /usr/local/bin/mise")
    res = vb.run("vm", "workspace", "prepare", VM, str(repo), "--include-untracked",
                 "--guest-path", "/root/untracked", timeout=180, check=True)
    assert "tooling: mise install done" in res.stderr
    files = guest(vb, f"cd /root/untracked && {LIST_FILES}").split()
    assert ".env" in files and ".tool-versions" in files and "debug.log" not in files
    log = guest(vb, "cat /root/.cache/banger/tooling-proj.log")
    assert "mise trust --quiet --all" in log and "mise install" in log
    res = vb.run("vm", "workspace", "prepare", VM, str(repo), "--no-bootstrap", "--force",
                 "--guest-path", "/root/untracked", timeout=180, check=True)
    assert "tooling" not in res.stderr
    guest(vb, "rm -rf /root/untracked /usr/local/bin/mise")
    res = vb.run("vm", "workspace", "export", VM, "-o", str(tmp_path / "x.tar"))
    assert res.returncode != 0 and "no workspace at /root/untracked" in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.startswith("error:")]) == 1
    res = vb.run("vm", "workspace", "export", VM, "--base", "1234abcd", "-o",
                 str(tmp_path / "x.tar"))
    assert res.returncode != 0 and "no workspace at /root/untracked" in res.stderr
    res = vb.run("vm", "workspace", "prepare", VM, str(repo), "--no-bootstrap",
                 "--guest-path", "/root/untracked", timeout=180, check=True)
    guest(vb, "cd /root/untracked && git update-ref -d refs/banger/base")
    res = vb.run("vm", "workspace", "export", VM, "-o", str(tmp_path / "x.tar"))
    assert res.returncode != 0 and "was not shipped by banger; pass --base" in res.stderr
    res = vb.run("vm", "workspace", "export", VM, "--base", "1234abcd", "-o",
                 str(tmp_path / "x.tar"))
    assert res.returncode != 0 and "base 1234abcd is not a commit in the guest" in res.stderr


def one_clear_error(res: subprocess.CompletedProcess[str], *says: str) -> None:
    """What a user sees when banger refuses: exit 1, one `error:` line, no traceback."""
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr  # progress aside
    assert "\x1b" not in res.stderr and all(s in lines[0] for s in says), res.stderr


# Runs the real git, then plants what a genuine agent would send along: a dir chain, an
# unknown file and a link out of the export dir.
GIT_WRAPPER = """#!/bin/sh
/usr/bin/git "$@" || exit $?
case "$*" in *"bundle create"*)
  out=/root/.cache/banger/export
  mkdir -p "$out/d/d/d" && echo extra > "$out/unknown.txt" && ln -sfn ../../.. "$out/outside"
  touch /root/wrapper-ran ;;
esac
"""

# Appended to the agent's module: its `get` now sends the real export plus the CVE-2025-4517
# chain, built by tests/workspace_attack.py (copied into the guest).
HOSTILE_GET = """

def op_get(channel, params):
    import sys
    sys.path.insert(0, "/root")
    from workspace_attack import hostile_export
    with open("/root/dest-len") as f:
        data = hostile_export(params["path"], int(f.read()))
    writer = ChannelWriter(channel, proto.TAR)
    writer.write(data)
    writer.close()
    return {"bytes": writer.total}
"""


def test_hostile_guest_export_writes_nothing_on_the_host(vb: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    vb.run("vm", "create", "--name", "evil", check=True, timeout=180)
    try:
        vb.run("vm", "workspace", "prepare", "evil", str(repo), timeout=180, check=True)
        guest(vb, "echo guest >> a.txt && git commit -qam guest", vm="evil")
        outside = tmp_path / "t"  # the CLI's temp dir: the old code extracted right under it
        outside.mkdir()
        env = {**vb.env, "TMPDIR": str(outside)}
        # A git wrapper earlier in PATH than the real one (root in the guest may do that).
        res = vb.run("vm", "exec", "-i", "evil", "--", "sh", "-c",
                     "cat > /usr/local/bin/git && chmod +x /usr/local/bin/git",
                     input=GIT_WRAPPER)
        assert res.returncode == 0, res.stderr
        res = apply_with(vb, env)
        one_clear_error(res, "workspace export from VM evil", "refusing member 'export/")
        assert guest(vb, "ls /root/wrapper-ran", vm="evil").strip() == "/root/wrapper-ran"
        # The agent itself replaced: its tar stream now carries the PATH_MAX symlink chain.
        dest_len = len(str(outside)) + len("/banger-apply-") + 8
        attack = Path(workspace_attack.__file__).read_text()
        vb.run("vm", "exec", "-i", "evil", "--", "sh", "-c",
               f"cat > /root/workspace_attack.py && echo {dest_len} > /root/dest-len && "
               "rm -f /usr/local/bin/git", input=attack, check=True)
        vb.run("vm", "exec", "-i", "evil", "--", "sh", "-c",
               "cat >> /usr/local/lib/banger/agent/exec_ops.py", input=HOSTILE_GET, check=True)
        vb.run("vm", "stop", "evil", check=True, timeout=120)
        vb.run("vm", "start", "--cold", "evil", check=True, timeout=300)
        res = apply_with(vb, env)
        one_clear_error(res, "refusing member 'export/ddd")
        assert sorted(os.listdir(outside)) == []  # nothing planted, no temp dir left behind
        assert git(repo, "rev-parse", "HEAD") == base  # and the host repo untouched
    finally:
        vb.run("vm", "delete", "-f", "evil", timeout=120)


def apply_with(vb: Banger, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return Banger(vb.home, env).run("vm", "workspace", "apply", "evil", timeout=180)


def test_guest_branch_never_moves_a_host_branch(vb: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    sh("git add -A && git commit -qm settle && git checkout -q -b feature", repo)
    main = git(repo, "rev-parse", "main")
    vb.run("vm", "workspace", "prepare", VM, str(repo), "--guest-path", "/root/branchy",
           timeout=180, check=True)
    # The guest moves to its own `main` and commits there.
    guest(vb, "cd /root/branchy && git checkout -q -b main && echo guest >> a.txt && "
              "git commit -qam 'guest on main'")
    res = vb.run("vm", "workspace", "apply", VM, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "1 commit(s) on branch feature (now checked out)" in res.stdout
    assert git(repo, "rev-parse", "main") == main  # the host's main did not move
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "feature"
    assert git(repo, "log", "-1", "--format=%s") == "guest on main"


def test_staged_host_changes_survive_apply(vb: Banger, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    sh("git add -A && git commit -qm settle", repo)
    vb.run("vm", "workspace", "prepare", VM, str(repo), "--guest-path", "/root/staged",
           timeout=180, check=True)
    sh("echo staged > s.txt && git add s.txt && echo later > s.txt", repo)  # staged only
    guest(vb, "cd /root/staged && echo guest > g.txt && git add g.txt && git commit -qm guest")
    res = vb.run("vm", "workspace", "apply", VM, timeout=180)
    assert res.returncode == 0, res.stderr
    assert git(repo, "show", ":s.txt") == "staged"
    assert (repo / "s.txt").read_text() == "later\n"
    assert git(repo, "log", "-1", "--format=%s") == "guest"


def test_run_path_ships_5000_files_and_passes_exit_code(vb: Banger, tmp_path: Path) -> None:
    repo = tmp_path / "big"
    for i in range(5000):
        d = repo / f"d{i // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n" + hashlib.sha1(str(i).encode()).hexdigest())
    sh("git init -q -b main && git -c user.name=a -c user.email=a@b add -A && "
       "git -c user.name=a -c user.email=a@b commit -qm big", repo)
    (repo / "d00" / "f0.txt").write_text("changed\n")
    res = vb.run("vm", "run", "--rm", str(repo / "d07"), "--",
                 "sh", "-c", "pwd; git -C .. ls-files | wc -l; cat ../d00/f0.txt; exit 7",
                 timeout=300)
    assert res.returncode == 7, res.stderr
    assert res.stdout.split() == ["/root/repo/d07", "5000", "changed"]
