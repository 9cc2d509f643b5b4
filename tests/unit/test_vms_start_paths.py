"""How a VM starts (StartPath, on the fake backend): resume its saved state, build or restore a
template, boot cold, and the fallbacks when one of them fails; what `vm show` then lists."""

from __future__ import annotations

import asyncio

import pytest

from banger.errors import OperationFailed
from banger.vms import coldboot
from banger.vms.model import VmState
from banger.vms.restore import saved_state
from banger.vms.templates import TEMPLATE_HOSTNAME
from tests.fakes.daemon import FakeDaemon, Progress, daemon_fixture

pytestmark = pytest.mark.timeout(60)
daemon = daemon_fixture(fast_start=True)


def hostname(daemon: FakeDaemon, name: str) -> str:
    """/etc/hostname as the guest has it."""
    vm = daemon.vms.repo.find(name)
    return (daemon.vm_dir(vm) / "guest-root" / "etc" / "hostname").read_text().strip()


def test_first_vm_builds_a_template_and_starts_from_it(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        [template] = daemon.vms.templates.list()
        assert daemon.events(vm) == [f"started from template {template.id}"]
        assert daemon.backend.steps(TEMPLATE_HOSTNAME)[-2:] == ["save_state", "kill"]
        assert daemon.backend.steps("web")[:3] == ["prepare_disk_on", "restore", "resume"]
        assert hostname(daemon, "web") == "web"  # a clone gets its own identity
        disk_base = daemon.backend.disk_base(daemon.vm_dir(vm))
        assert disk_base == daemon.vms.templates.disk(template)

    asyncio.run(scenario())


def test_later_vms_restore_the_template_without_building(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        await daemon.create("one")
        built = daemon.backend.steps(TEMPLATE_HOSTNAME)
        two = await daemon.create("two")
        assert daemon.backend.steps(TEMPLATE_HOSTNAME) == built
        assert daemon.events(two)[0].startswith("started from template")
        assert hostname(daemon, "two") == "two"

    asyncio.run(scenario())


@pytest.mark.parametrize("step", ["restore", "resume"])
def test_an_unusable_template_is_dropped_and_the_vm_boots_cold(daemon: FakeDaemon,
                                                               step: str) -> None:
    async def scenario() -> None:
        await daemon.create("one")
        [template] = daemon.vms.templates.list()
        daemon.backend.fail(step)
        two = await daemon.create("two")
        assert two.state == VmState.RUNNING
        assert daemon.events(two) == [f"restoring template {template.id} failed "
                                      f"(fake {step} failed); booting cold"]
        assert daemon.vms.templates.list() == []  # rebuilt by the next start
        assert daemon.backend.steps("two")[-1] == "restore_forwards"
        assert daemon.backend.steps("two", "prepare_disk", "start") == ["prepare_disk", "start"]
        assert daemon.backend.disk_base(daemon.vm_dir(two)) is None  # its own disk now

    asyncio.run(scenario())


def test_a_failed_template_build_boots_cold_and_leaves_no_staging(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        daemon.backend.fail("save_state")
        vm = await daemon.create("web")
        assert vm.state == VmState.RUNNING
        assert daemon.events(vm) == ["building a template failed (fake save_state failed); "
                                     "booting cold"]
        root = daemon.vms.templates.root
        assert [d.name for d in root.iterdir() if not d.name.startswith(".disks")] == []
        assert daemon.machine.running() == [int((daemon.vm_dir(vm) / "fake.pid").read_text())]

    asyncio.run(scenario())


def test_a_clone_that_cannot_be_personalised_fails_and_the_next_start_works(
        daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        await daemon.create("one")
        daemon.backend.fail("configure")  # the clone's first configure call
        with pytest.raises(OperationFailed, match="configure failed in the fake guest"):
            await daemon.create("two")
        two = daemon.vms.repo.find("two")
        assert two.state == VmState.ERROR
        assert not daemon.backend.disk_path(daemon.vm_dir(two)).exists()  # no half-made clone
        started = await daemon.vms.start("two", Progress())
        assert started.state == VmState.RUNNING
        assert daemon.events(started)[-1].startswith("started from template")

    asyncio.run(scenario())


def test_cold_create_boots_from_the_image_and_builds_no_template(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web", cold=True)
        assert vm.state == VmState.RUNNING
        assert daemon.vms.templates.list() == []
        assert daemon.backend.steps("web")[:2] == ["prepare_disk", "start"]
        assert daemon.events(vm) == []

    asyncio.run(scenario())


def test_stop_save_then_start_resumes_once(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web", cold=True)
        await daemon.vms.stop("web", Progress(), save=True)
        assert saved_state(daemon.vm_dir(vm)).exists()
        assert daemon.events(vm) == ["stopped with its memory saved"]
        resumed = await daemon.vms.start("web", Progress())
        assert resumed.state == VmState.RUNNING
        assert daemon.events(vm)[-1] == "resumed from its saved state"
        steps = daemon.backend.steps("web")
        after_save = steps[steps.index("save_state") + 1:]
        assert after_save[:3] == ["kill", "restore", "resume"] and "start" not in after_save
        assert not saved_state(daemon.vm_dir(vm)).exists()  # the disk moves on: single use

    asyncio.run(scenario())


def test_a_failed_save_leaves_the_vm_running(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        await daemon.create("web", cold=True)
        daemon.backend.fail("save_state")
        with pytest.raises(OperationFailed, match="saving web failed, it keeps running: "
                                                  "fake save_state failed"):
            await daemon.vms.stop("web", Progress(), save=True)
        assert daemon.vms.repo.find("web").state == VmState.RUNNING
        _, agent = await daemon.vms.agent_for("web")
        assert (await agent.health()).ok

    asyncio.run(scenario())


def test_an_unusable_saved_state_falls_back_to_a_cold_boot(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web", cold=True)
        await daemon.vms.stop("web", Progress(), save=True)
        saved_state(daemon.vm_dir(vm)).write_text("truncated")
        started = await daemon.vms.start("web", Progress())
        assert started.state == VmState.RUNNING
        [fallback] = daemon.events(vm)[1:]
        assert fallback.startswith("resuming the saved state failed (fake: cannot load "
                                   "memory.snap")
        assert fallback.endswith("booting cold from the VM's disk")
        assert not saved_state(daemon.vm_dir(vm)).exists()

    asyncio.run(scenario())


def test_start_cold_forgets_the_saved_state(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web", cold=True)
        await daemon.vms.stop("web", Progress(), save=True)
        await daemon.vms.start("web", Progress(), cold=True)
        assert "restore" not in daemon.backend.steps("web")
        assert not saved_state(daemon.vm_dir(vm)).exists()

    asyncio.run(scenario())


def test_an_early_boot_hang_is_retried(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coldboot, "EARLY_TIMEOUT", 0.3)

    async def scenario() -> None:
        daemon.backend.fail("hang")
        progress = Progress()
        vm = await daemon.create("web", progress, cold=True)
        assert vm.state == VmState.RUNNING
        assert "boot: early boot hang; retrying" in progress.lines
        assert daemon.backend.steps("web", "start", "kill") == ["start", "kill", "start"]

    asyncio.run(scenario())


def test_a_guest_that_always_hangs_fails_with_one_line(daemon: FakeDaemon,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coldboot, "EARLY_TIMEOUT", 0.1)

    async def scenario() -> None:
        for _ in range(coldboot.ATTEMPTS):
            daemon.backend.fail("hang")
        with pytest.raises(OperationFailed):
            await daemon.create("web", cold=True)
        vm = daemon.vms.repo.find("web")
        assert vm.state == VmState.ERROR
        assert vm.last_error == ("the guest hung in early boot 3 times; see `banger vm logs web` "
                                 "and report it")
        assert daemon.machine.running() == []

    asyncio.run(scenario())
