"""The agent catalog's pulls against a fake npm registry served on loopback by this test:
packument parsing, integrity refusal before a byte is used, the cache, npm config lookup."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from banger.agents import cache
from banger.agents.catalog import AGENTS, parse_ref
from banger.agents.pull import pull
from banger.agents.registry import user_registry
from banger.errors import BangerError, InvalidArgument, NotFound, OperationFailed
from banger.paths import Paths

BINARY = b"\x7fELF fake opencode\n" * 100


def tgz(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """Routes path -> (status, body); counts the requests each path got."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: dict[str, int] = {}
        self.url = ""

    def publish(self, package: str, versions: dict[str, bytes], *, latest: str,
                integrity: dict[str, str | None] | None = None,
                served: dict[str, bytes] | None = None) -> None:
        """A packument for package; each version's tarball is served (or `served` instead)."""
        docs: dict[str, Any] = {}
        for version, data in versions.items():
            path = f"/tarballs/{package.replace('/', '_')}-{version}.tgz"
            self.routes[path] = (200, (served or {}).get(version, data))
            sums = integrity or {}
            docs[version] = {"name": package, "version": version, "repository": {"x": 1},
                             "dist": {"tarball": self.url + path,
                                      "integrity": sums.get(version, sri(data)),
                                      "shasum": hashlib.sha1(data).hexdigest()}}
        body = {"name": package, "dist-tags": {"latest": latest}, "versions": docs,
                "time": {"created": "2026-01-01"}}
        self.routes["/" + package.replace("/", "%2F")] = (200, json.dumps(body).encode())


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            reg.hits[self.path] = reg.hits.get(self.path, 0) + 1
            status, body = reg.routes.get(self.path, (404, b"{}"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    reg.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield reg
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "cache", tmp_path / "run")


def opencode_pkg(binary: bytes = BINARY) -> bytes:
    return tgz({"package/package.json": b'{"name":"opencode-linux-x64"}',
                "package/bin/opencode": binary, "package/README.md": b"hi"})


def do_pull(paths: Paths, registry: Registry, ref: str = "opencode", **kw: Any) -> cache.AgentManifest:
    spec, version = parse_ref(ref)
    return asyncio.run(pull(paths, spec, version, registry.url, **kw))


def nothing_cached(paths: Paths, name: str = "opencode") -> bool:
    base = cache.agents_dir(paths) / name
    return not base.exists() or not any(base.iterdir())


def test_pull_verifies_unpacks_only_the_binary_and_records_it(paths: Paths,
                                                              registry: Registry) -> None:
    data = opencode_pkg()
    registry.publish("opencode-linux-x64", {"1.2.3": data, "1.2.4": opencode_pkg(b"new")},
                     latest="1.2.3")
    m = do_pull(paths, registry)
    assert (m.name, m.version, m.cached, m.integrity) == ("opencode", "1.2.3", False, sri(data))
    shipped = Path(m.dir)
    assert shipped.name == "opencode-1.2.3"
    assert (shipped / "bin/opencode").read_bytes() == BINARY
    assert (shipped / "bin/opencode").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in shipped.rglob("*")) == [".banger-integrity", "bin", "opencode"]
    assert (shipped / ".banger-integrity").read_text().strip() == sri(data)
    assert [(f.path, f.sha256) for f in m.files] == [("bin/opencode",
                                                      hashlib.sha256(BINARY).hexdigest())]
    assert m.tarball_bytes == len(data) and m.registry == registry.url + "/"
    on_disk = json.loads((Path(m.dir).parent / "manifest.json").read_text())
    assert on_disk["integrity"] == sri(data)
    assert not list(cache.agents_dir(paths).glob("opencode/.staging-*"))


def test_a_second_pull_uses_the_cache(paths: Paths, registry: Registry) -> None:
    registry.publish("opencode-linux-x64", {"1.2.3": opencode_pkg()}, latest="1.2.3")
    first = do_pull(paths, registry)
    tarball = "/tarballs/opencode-linux-x64-1.2.3.tgz"
    assert registry.hits[tarball] == 1
    again = do_pull(paths, registry)
    assert again.cached and again.dir == first.dir
    assert registry.hits[tarball] == 1  # latest was resolved, the tarball not fetched again
    packument_hits = registry.hits["/opencode-linux-x64"]
    exact = do_pull(paths, registry, "opencode@1.2.3")
    assert exact.cached and registry.hits["/opencode-linux-x64"] == packument_hits  # no network
    forced = do_pull(paths, registry, "opencode@1.2.3", force=True)
    assert not forced.cached and registry.hits[tarball] == 2


def test_a_tampered_tarball_is_refused_and_nothing_is_cached(paths: Paths,
                                                             registry: Registry) -> None:
    good = opencode_pkg()
    registry.publish("opencode-linux-x64", {"1.2.3": good}, latest="1.2.3",
                     served={"1.2.3": opencode_pkg(b"evil")})
    with pytest.raises(OperationFailed) as err:
        do_pull(paths, registry)
    assert "is not the registry's integrity; refusing it" in err.value.message
    assert "\n" not in err.value.message
    assert nothing_cached(paths)


def test_a_bad_or_missing_integrity_is_refused_before_downloading(paths: Paths,
                                                                  registry: Registry) -> None:
    for integrity, why in [("sha512-bm90IDY0IGJ5dGVz", "malformed"),
                           ("sha1-" + base64.b64encode(b"x" * 20).decode(), "no sha512"),
                           (None, "no sha512")]:
        registry.publish("opencode-linux-x64", {"1.2.3": opencode_pkg()}, latest="1.2.3",
                         integrity={"1.2.3": integrity})
        with pytest.raises(OperationFailed, match=why):
            do_pull(paths, registry)
        assert registry.hits.get("/tarballs/opencode-linux-x64-1.2.3.tgz") is None
        assert nothing_cached(paths)


def test_http_errors_are_one_line_and_cache_nothing(paths: Paths, registry: Registry) -> None:
    with pytest.raises(NotFound, match="opencode-linux-x64 is not on the npm registry"):
        do_pull(paths, registry)
    registry.publish("opencode-linux-x64", {"1.2.3": opencode_pkg()}, latest="1.2.3")
    registry.routes["/tarballs/opencode-linux-x64-1.2.3.tgz"] = (500, b"oops")
    with pytest.raises(OperationFailed, match="HTTP 500") as err:
        do_pull(paths, registry)
    assert "\n" not in err.value.message
    assert nothing_cached(paths)
    registry.routes["/opencode-linux-x64"] = (503, b"")
    with pytest.raises(OperationFailed, match="answered HTTP 503"):
        do_pull(paths, registry)


def test_hostile_packuments_are_refused(paths: Paths, registry: Registry) -> None:
    registry.routes["/opencode-linux-x64"] = (200, b'{"name": "opencode-linux-x64", "versions": 7}')
    with pytest.raises(OperationFailed, match="malformed"):
        do_pull(paths, registry)
    registry.publish("other", {"1.0.0": opencode_pkg()}, latest="1.0.0")
    registry.routes["/opencode-linux-x64"] = registry.routes["/other"]
    with pytest.raises(OperationFailed, match="answered for 'other'"):
        do_pull(paths, registry)
    registry.publish("opencode-linux-x64", {"1.2.3": opencode_pkg()}, latest="1.2.3")
    doc = json.loads(registry.routes["/opencode-linux-x64"][1])
    doc["versions"]["1.2.3"]["dist"]["tarball"] = "file:///etc/passwd"
    registry.routes["/opencode-linux-x64"] = (200, json.dumps(doc).encode())
    with pytest.raises(OperationFailed, match="is not http"):
        do_pull(paths, registry)
    doc["dist-tags"]["latest"] = "../../x"
    registry.routes["/opencode-linux-x64"] = (200, json.dumps(doc).encode())
    with pytest.raises(OperationFailed, match="not a plain npm version"):
        do_pull(paths, registry)
    assert nothing_cached(paths)


def test_a_tarball_with_a_link_or_without_the_binary_is_refused(paths: Paths,
                                                                registry: Registry) -> None:
    for bad in [tgz({"package/x": b"1"}, links={"package/bin/opencode": "/bin/sh"}),
                tgz({"package/package.json": b"{}"})]:
        registry.publish("opencode-linux-x64", {"1.2.3": bad}, latest="1.2.3")
        with pytest.raises(OperationFailed) as err:
            do_pull(paths, registry)
        assert "bin/opencode" in err.value.message
        assert nothing_cached(paths)


def test_codex_platform_builds_are_versions_with_a_suffix(paths: Paths,
                                                          registry: Registry) -> None:
    codex = "vendor/x86_64-unknown-linux-musl"
    pkg = tgz({f"package/{codex}/bin/codex": b"codex", f"package/{codex}/codex-path/rg": b"rg",
               f"package/{codex}/codex-resources/big.so": b"not shipped"})
    registry.publish("@openai/codex", {"0.9.0": tgz({"package/bin/codex.js": b""}),
                                       "0.9.0-linux-x64": pkg}, latest="0.9.0")
    m = do_pull(paths, registry, "codex")
    assert (m.version, m.npm_version) == ("0.9.0", "0.9.0-linux-x64")
    assert sorted(f.path for f in m.files) == [f"{codex}/bin/codex", f"{codex}/codex-path/rg"]
    assert not (Path(m.dir) / codex / "codex-resources").exists()
    assert registry.hits["/@openai%2Fcodex"] == 1


def test_refs_and_unknown_agents() -> None:
    assert parse_ref("codex@0.1.0")[1] == "0.1.0"
    assert parse_ref("opencode")[1] is None
    assert set(AGENTS) == {"opencode", "codex", "claude"}
    with pytest.raises(InvalidArgument, match="unknown agent"):
        parse_ref("vim")
    with pytest.raises(InvalidArgument, match="npm version or dist-tag"):
        parse_ref("opencode@../x")


def test_the_registry_comes_from_npm_config(tmp_path: Path) -> None:
    rc = tmp_path / "npmrc"
    rc.write_text("; comment\nregistry = http://127.0.0.1:7/${SUB}/\n"
                  "@openai:registry=http://127.0.0.1:9/scoped\n")
    env = {"NPM_CONFIG_USERCONFIG": str(rc), "SUB": "x", "HOME": str(tmp_path)}
    assert user_registry("opencode-linux-x64", env) == "http://127.0.0.1:7/x/"
    assert user_registry("@openai/codex", env) == "http://127.0.0.1:9/scoped/"
    env["npm_config_registry"] = "http://127.0.0.1:8/"
    assert user_registry("opencode-linux-x64", env) == "http://127.0.0.1:8/"
    assert user_registry("x", {"HOME": str(tmp_path),
                               "NPM_CONFIG_USERCONFIG": str(tmp_path / "none")}) is None
    with pytest.raises(BangerError, match="not an http"):
        user_registry("x", {"NPM_CONFIG_REGISTRY": "file:///tmp"})


def test_two_pulls_at_once_fetch_once(paths: Paths, registry: Registry) -> None:
    registry.publish("opencode-linux-x64", {"1.2.3": opencode_pkg()}, latest="1.2.3")
    spec, _ = parse_ref("opencode")

    async def both() -> list[cache.AgentManifest]:
        return list(await asyncio.gather(pull(paths, spec, None, registry.url),
                                         pull(paths, spec, None, registry.url)))

    first, second = asyncio.run(both())
    assert sorted([first.cached, second.cached]) == [False, True]
    assert registry.hits["/tarballs/opencode-linux-x64-1.2.3.tgz"] == 1


def test_pass_env_names_host_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from banger.cli.agent_cmds import passed_env

    monkeypatch.setenv("AGENT_KEY", "k1")
    monkeypatch.delenv("AGENT_UNSET", raising=False)
    assert passed_env(("AGENT_KEY",)) == {"AGENT_KEY": "k1"}
    with pytest.raises(InvalidArgument, match="AGENT_UNSET: it is not set"):
        passed_env(("AGENT_UNSET",))
    with pytest.raises(InvalidArgument, match="not an environment variable name"):
        passed_env(("A=B",))


def test_only_the_checked_sha512_of_an_integrity_is_kept(paths: Paths, registry: Registry) -> None:
    data = opencode_pkg()
    registry.publish("opencode-linux-x64", {"1.2.3": data}, latest="1.2.3",
                     integrity={"1.2.3": "sha1-\x1b]0;pwned\x07 " + sri(data)})
    m = do_pull(paths, registry)
    assert m.integrity == sri(data)
    assert (Path(m.dir) / ".banger-integrity").read_text() == sri(data) + "\n"


def test_a_cached_copy_of_other_bytes_is_fetched_again(paths: Paths, registry: Registry) -> None:
    """A version cached from another registry (or other bytes) is not "already cached" when
    the registry now names a different integrity for it."""
    registry.publish("opencode-linux-x64", {"1.2.3": opencode_pkg(b"from a bad registry")},
                     latest="1.2.3")
    bad = do_pull(paths, registry)
    good_data = opencode_pkg()
    registry.publish("opencode-linux-x64", {"1.2.3": good_data}, latest="1.2.3")
    good = do_pull(paths, registry)
    assert not good.cached and good.integrity == sri(good_data) != bad.integrity
    assert (Path(good.dir) / "bin/opencode").read_bytes() == BINARY


def test_npm_config_is_asked_outside_the_current_project(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A repo's own .npmrc must not pick where agent binaries come from."""
    import shutil

    from banger.agents import registry as reg

    if shutil.which("npm") is None:
        pytest.skip("npm not installed")
    (tmp_path / ".npmrc").write_text("registry=http://127.0.0.1:9/evil/\n")
    monkeypatch.chdir(tmp_path)
    assert reg._npm_config_get("registry") != "http://127.0.0.1:9/evil/"
