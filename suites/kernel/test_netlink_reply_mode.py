"""Netlink reply mode (drivers/target/target_core_user.c, tcmu_netlink_event_send and
tcmu_wait_genl_cmd_reply): once a daemon sends SET_FEATURES with SUPP_KERN_CMD_REPLY=1,
the kernel waits for the *_DONE reply to ADDED_DEVICE (the `enable` write), RECONFIG_DEVICE
(dev_size, dev_config, emulate_write_cache writes) and REMOVED_DEVICE, and the configfs
write returns the reply's status: a negative errno fails it and nothing changes. A
device whose nl_reply_supported is below 0 opts out; tcmu_configure_device replaces a
value of 0 or more by the module's setting at enable time.

The reply-mode peer is lio/reply_mode.py (in the guest): it turns reply
mode on for the test and off before the test's LUNs are deleted, answers only the events
a test names, and fails a write the kernel keeps waiting on after RESCUE_S with -EINTR
(reset_netlink), meant to make a kernel that waits where it should not fail the test
rather than hang the guest (a best effort: see the caveat in lio/reply_mode.py). Nothing
here ever waits on a reply nobody will send.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tcmu.netlink import GenlCmd
from tcmu_harness.initiator import cdb
from tcmu_harness.lun import Lun, LunManager
from tcmu_harness.scsi.constants import Asc, SenseKey

pytestmark = pytest.mark.vm

GUEST = "tcmu_harness.lio.reply_mode"
RESCUE_S = 10.0  # s a configfs write may wait for a reply before the peer fails it
# s for a whole LUN creation (handler start, export, sd probe: ~12 s under TCG); the
# enable inside it is timed on its own (setup_steps["backstore"])
LUN_RESCUE_S = 40.0
ENABLE_S = 5.0  # longest a backstore's creation and enable take when nothing is awaited
SIZE = 16 << 20  # helper_lun's LUN size
REFUSAL = errno.EMEDIUMTYPE  # a status no other part of the path produces


class ReplyPeer:
    """Host handle of the guest's reply-mode peer."""

    def __init__(self, lun_manager: LunManager) -> None:
        self.vm = lun_manager.vm

    def call(self, fn: str, **kwargs: Any) -> Any:
        return self.vm.call(f"{GUEST}:{fn}", **kwargs)

    def answer(self, device: str, cmd: GenlCmd, status: int) -> None:
        self.call("answer", device=device, cmd=int(cmd), status=status)

    def seen(self, device: str) -> list[tuple[int, int | None]]:
        """(cmd, dev_size) of every event of backstore `device` so far."""
        return [(e["cmd"], e["dev_size"]) for e in self.call("seen", device=device)]

    @contextmanager
    def armed(self, what: str, seconds: float = RESCUE_S) -> Iterator[None]:
        """Run configfs writes with the rescue armed; fail, saying so, if it fired."""
        self.call("arm", seconds=seconds)
        try:
            yield
        finally:
            fired = self.call("disarm")
            if fired:
                pytest.fail(f"{what}: the kernel was still waiting for a netlink reply after "
                            f"{seconds:.0f} s (failed with -EINTR through reset_netlink)",
                            pytrace=False)

    def write(self, path: str, text: str) -> int:
        """Write to configfs, armed; 0 or the write's errno."""
        with self.armed(f"writing {text!r} to {path}"):
            return self.call("write", path=path, text=text)


@pytest.fixture
def reply_mode(helper_lun: Callable[..., Lun], lun_manager: LunManager) -> Iterator[ReplyPeer]:
    """Reply mode on for the test; off again before helper_lun deletes the test's LUNs
    (this fixture depends on helper_lun, so its teardown comes first)."""
    peer = ReplyPeer(lun_manager)
    peer.call("start")
    try:
        yield peer
    finally:
        peer.call("stop")


def _last_lba(lun: Lun) -> int:
    data = lun.cdb(cdb.read_capacity_10(), data_in_len=8).expect_good().data
    return int.from_bytes(data[:4], "big")


def _expect_capacity_changed(lun: Lun) -> None:
    """The handler's unit attention for a size it followed (tcmu.block), then GOOD."""
    lun.cdb(cdb.test_unit_ready()).expect_check(SenseKey.UNIT_ATTENTION,
                                                Asc.CAPACITY_DATA_HAS_CHANGED)
    lun.cdb(cdb.test_unit_ready()).expect_good()


def test_a_device_with_nl_reply_supported_minus_1_is_never_waited_for(
    reply_mode: ReplyPeer, helper_lun: Callable[..., Lun],
) -> None:
    """Reply mode on, a device created with nl_reply_supported=-1 and nobody answering
    for it (the peer has no rule, the runtime reads -1 and stays silent): the `enable`
    write completes though ADDED_DEVICE was multicast and never answered, the attribute
    still reads -1, the device serves commands, and a dev_size write completes without a
    reply too: the RECONFIG_DEVICE reaches the handler, which follows it (UNIT ATTENTION
    2A/09, then READ CAPACITY the new size)."""
    with reply_mode.armed("creating a LUN with nl_reply_supported=-1", LUN_RESCUE_S):
        lun = helper_lun("KernelProbeDisk", name="nlr_optout",
                         control={"nl_reply_supported": -1})
    enable_s = lun.info["setup_steps"]["backstore"]
    assert enable_s < ENABLE_S, f"the backstore's creation and enable took {enable_s} s"
    assert lun.attribute("nl_reply_supported") == "-1"
    assert reply_mode.seen(lun.name) == [(GenlCmd.ADDED_DEVICE, None)]
    assert _last_lba(lun) == SIZE // 512 - 1

    grown = 2 * SIZE
    assert reply_mode.write(f"{lun.backstore_dir}/attrib/dev_size", f"{grown}\n") == 0
    assert lun.attribute("dev_size") == str(grown)
    assert reply_mode.seen(lun.name)[1:] == [(GenlCmd.RECONFIG_DEVICE, grown)]
    # Nobody was waited for, so the handler follows the event on its own time.
    deadline = time.monotonic() + 20
    while "device reconfigured" not in lun.handler_output():
        assert time.monotonic() < deadline, "the handler never logged the RECONFIG"
        time.sleep(0.1)
    _expect_capacity_changed(lun)
    assert _last_lba(lun) == grown // 512 - 1


def test_a_refused_added_device_fails_enable_with_the_reply_s_errno(
    reply_mode: ReplyPeer,
) -> None:
    """Reply mode on, a device whose nl_reply_supported is 0 (it follows the module):
    the `enable` write waits for ADDED_DEVICE_DONE and, the peer answering -EMEDIUMTYPE,
    fails with EMEDIUMTYPE: enable reads 0 and no UIO device is left for it
    (tcmu_configure_device's error path unregisters it). A second `enable`, answered 0,
    succeeds: enable reads 1, nl_reply_supported reads 1 (the module's setting) and
    the UIO device exists. Its removal waits for REMOVED_DEVICE_DONE, answered 0."""
    name = "nlr_added"
    path = reply_mode.call("make_backstore", name=name,
                           control=f"dev_config=harness/{name},dev_size={SIZE},"
                                   "nl_reply_supported=0")
    try:
        reply_mode.answer(name, GenlCmd.ADDED_DEVICE, -REFUSAL)
        assert reply_mode.write(f"{path}/enable", "1\n") == REFUSAL
        assert reply_mode.vm.read_file(f"{path}/enable").strip() == b"0"
        assert not [u for u in reply_mode.call("uio_names") if f"/{name}/" in u]

        reply_mode.answer(name, GenlCmd.ADDED_DEVICE, 0)
        reply_mode.answer(name, GenlCmd.REMOVED_DEVICE, 0)
        assert reply_mode.write(f"{path}/enable", "1\n") == 0
        assert reply_mode.vm.read_file(f"{path}/enable").strip() == b"1"
        assert reply_mode.vm.read_file(f"{path}/attrib/nl_reply_supported").strip() == b"1"
        assert [u for u in reply_mode.call("uio_names") if f"/{name}/" in u]
    finally:
        with reply_mode.armed(f"removing backstore {name}"):
            reply_mode.call("remove_backstore", path=path)
    assert reply_mode.seen(name) == [(GenlCmd.ADDED_DEVICE, None), (GenlCmd.ADDED_DEVICE, None),
                                     (GenlCmd.REMOVED_DEVICE, None)]


def test_a_reconfig_the_handler_refuses_fails_the_write_and_changes_nothing(
    reply_mode: ReplyPeer, helper_lun: Callable[..., Lun],
) -> None:
    """Reply mode on, a device created with nl_reply_supported=0 (so 1 once enabled), the
    peer answering its ADDED_DEVICE and the runtime its RECONFIG_DEVICE (GrowOnlyDisk
    refuses to shrink; the runtime answers a refusal -EINVAL): a dev_size write to half
    the size fails with EINVAL, dev_size and READ CAPACITY stay as they were, no unit
    attention is pending and the device serves commands; a following dev_size write to
    twice the size succeeds, and since the kernel waited for the handler's reply, the
    handler has followed it by the time the write returns (UNIT ATTENTION 2A/09 at once,
    then READ CAPACITY the new size)."""
    name = "nlr_reconfig"
    reply_mode.answer(name, GenlCmd.ADDED_DEVICE, 0)
    with reply_mode.armed("creating a LUN whose ADDED_DEVICE is answered", LUN_RESCUE_S):
        lun = helper_lun("GrowOnlyDisk", name=name, control={"nl_reply_supported": 0})
    assert lun.attribute("nl_reply_supported") == "1"
    dev_size = f"{lun.backstore_dir}/attrib/dev_size"

    assert reply_mode.write(dev_size, f"{SIZE // 2}\n") == errno.EINVAL
    assert lun.attribute("dev_size") == str(SIZE)
    lun.cdb(cdb.test_unit_ready()).expect_good()
    assert _last_lba(lun) == SIZE // 512 - 1

    grown = 2 * SIZE
    assert reply_mode.write(dev_size, f"{grown}\n") == 0
    assert lun.attribute("dev_size") == str(grown)
    _expect_capacity_changed(lun)
    assert _last_lba(lun) == grown // 512 - 1
    assert reply_mode.seen(name) == [(GenlCmd.ADDED_DEVICE, None),
                                     (GenlCmd.RECONFIG_DEVICE, SIZE // 2),
                                     (GenlCmd.RECONFIG_DEVICE, grown)]
