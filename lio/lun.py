"""LUNs in the guest: a TCMU user backstore served by a handler process, exported
through tcm_loop, so the guest has /dev/sgN and /dev/sdX for it.

Runs inside the guest agent (the host calls these functions through the agent's
`call` op); the registry of live LUNs is this agent process's state.

Order matters: backstore (the UIO device appears) -> handler serving the ring ->
loopback target (its nexus creates a SCSI host) -> LUN link (the SCSI scan sends
INQUIRY & co. to the handler) -> wait for the sg node -> wait out the kernel's probe of
the disk (lio.watchdog.settle: a handler that dies or hangs on it fails the creation).
From its start the handler is watched (lio.watchdog). Teardown runs backwards and
leaves configfs as it was: the loopback target, the backstore and its HBA gone; a dead
or stuck handler is replaced by a stand-in that answers whatever the removal sends.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from rtslib_fb import LUN, TPG, FabricModule, Target, UserBackedStorageObject

from tcmu.spec import load as load_handler_spec
from tcmu_harness.lio import handlers, watchdog

CONFIGFS = "/sys/kernel/config/target"
RUN_DIR = "/run/tcmu-harness/handlers"
# Per-LUN backing files of file handlers: dev_config defaults to "<subtype>/<DISK_DIR>/<name>.img"
# (the tcmu-runner "file/<path>" convention), removed with the LUN.
DISK_DIR = "/var/tmp/tcmu-harness"
# The largest transfer SG_IO carries here in one command (256 segments of 4 KiB pages);
# hw_max_sectors defaults to it, so the handler's Block Limits VPD can be honoured.
DEFAULT_MAX_TRANSFER = 1 << 20
DEFAULT_HANDLER = "tcmu.handlers.ramdisk:RamDisk"
# Serves a LUN's removal when its own handler is dead or stuck (sd may send SYNCHRONIZE
# CACHE, the block layer may retry a READ): a crashed handler restarted would crash again.
STAND_IN_HANDLER = "tcmu.handlers.ramdisk:RamDisk"
STUCK_AFTER = 5.0  # s with commands in flight, none answered, at teardown: a stuck handler
EXIT_WAIT = 10.0  # s a handler has to exit once its device is gone
_FORKSERVER_LOST_STATUS = 255  # multiprocessing.popen_forkserver's "no status came back"


class LunError(RuntimeError):
    pass


@dataclass
class _Path:
    """One more I_T nexus to a LUN's backstore: a loopback target of its own."""

    target: Target
    address: str
    sg: str

    def describe(self) -> dict[str, Any]:
        tpg = next(iter(self.target.tpgs))
        return {"address": self.address, "sg": self.sg, "wwn": self.target.wwn,
                "initiator": _read(f"{tpg.path}/nexus").strip()}


@dataclass
class _Lun:
    name: str
    storage: UserBackedStorageObject
    target: Target | None
    handler: handlers.HandlerProcess
    uio_name: str
    spec: str
    address: str = ""  # SCSI H:C:T:L
    sg: str = ""
    sd: str = ""
    # More I_T nexuses to the same backstore (add_path): each its own loopback target
    # with LUN 0; paths[i] is path i + 1 (path 0 is the LUN's own target above).
    paths: list[_Path] = field(default_factory=list)

    def path_sg(self, path: int) -> str:
        """The sg node of path `path` (0: the LUN's own)."""
        if path == 0:
            return self.sg
        if not 0 < path <= len(self.paths):
            raise LunError(f"LUN {self.name} has no path {path} (paths 0..{len(self.paths)})")
        return self.paths[path - 1].sg

    @property
    def backstore_dir(self) -> str:
        return str(self.storage.path)

    @property
    def scsi_dir(self) -> str:
        return f"/sys/class/scsi_device/{self.address}/device"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uio_name": self.uio_name,
            "address": self.address,
            "sg": self.sg,
            "sd": self.sd,
            "wwn": self.target.wwn if self.target is not None else "",
            "handler_pid": self.handler.pid,
            "handler_spec": self.spec,
            "command_log": self.handler.log_path,
            "handler_output": self.handler.output_path,
            "size": int(self.storage.size),
            "block_size": int(self.storage.get_attribute("hw_block_size")),
        }


_LUNS: dict[str, _Lun] = {}


def warm() -> None:
    """Agent warm-up hook: importing this module paid for rtslib; start the forkserver."""
    handlers.warm()


def _handler_spec(handler: str, options: dict[str, str] | None) -> str:
    words = [handler] + [f"{k}={shlex.quote(str(v))}" for k, v in (options or {}).items()]
    return " ".join(words)


def create(
    name: str,
    *,
    size: int,
    block_size: int = 512,
    handler: str = DEFAULT_HANDLER,
    handler_options: dict[str, str] | None = None,
    config: str | None = None,
    attributes: dict[str, str | int] | None = None,
    control: dict[str, str | int] | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Create and export one LUN; returns its description (device nodes, log paths)."""
    if name in _LUNS:
        raise LunError(f"a LUN named {name} exists already; delete it or pick another name")
    if size <= 0 or size % block_size:
        raise LunError(f"size {size} is not a positive multiple of the block size {block_size}")
    steps: dict[str, float] = {}
    mark = time.monotonic()

    def step(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        steps[name] = round(now - mark, 4)
        mark = now

    spec = _handler_spec(handler, handler_options)
    handler_cls = load_handler_spec(spec).cls  # a bad spec fails here, before configfs
    subtype = getattr(handler_cls, "subtype", "") or "harness"
    controls = {"hw_block_size": block_size, "nl_reply_supported": -1,
                "hw_max_sectors": max(1, DEFAULT_MAX_TRANSFER // block_size), **(control or {})}
    storage = UserBackedStorageObject(
        name,
        config=f"{subtype}/{config or _disk_path(name)}",
        size=size,
        control=",".join(f"{k}={v}" for k, v in controls.items()),
    )
    lun: _Lun | None = None
    step("backstore")
    try:
        for key, value in (attributes or {}).items():
            storage.set_attribute(key, str(value))
        uio_name = _uio_name(storage)
        os.makedirs(RUN_DIR, exist_ok=True)
        process = handlers.start(
            spec,
            uio_name,
            log_path=f"{RUN_DIR}/{name}.commands.jsonl",
            output_path=f"{RUN_DIR}/{name}.output.log",
            timeout=timeout,
        )
        step("handler")
        lun = _Lun(name, storage, None, process, uio_name, spec)
        _LUNS[name] = lun
        watchdog.watch(lun)
        lun.target = Target(FabricModule("loopback"))
        tpg = TPG(lun.target, 1)  # rtslib gives a loopback TPG its nexus here
        step("target")
        LUN(tpg, 0, storage)
        step("lun_link")
        lun.address = f"{_read(f'{tpg.path}/address').strip()}:0"
        lun.sg = _wait_for_sg(lun.address, time.monotonic() + timeout)
        step("sg_node")
        watchdog.settle(name, lun.scsi_dir, timeout)
        step("settle")
    except BaseException as exc:
        if lun is not None:
            errors = _teardown(lun)["errors"]
        else:
            errors = []
            try:
                storage.delete()
            except Exception as cleanup:
                errors.append(f"{type(cleanup).__name__}: {cleanup}")
        if errors and isinstance(exc, Exception):
            raise LunError(f"{exc}; cleaning up after it failed too: {'; '.join(errors)}") from exc
        raise
    return {**lun.describe(), "setup_steps": steps}


def delete(name: str) -> dict[str, Any]:
    """Unexport and delete a LUN, stop its handler; returns the handler's exit code
    and output tail (a handler that crashed says why there)."""
    return _teardown(_get(name))


def delete_all() -> list[str]:
    names = list(_LUNS)
    for name in names:
        _teardown(_LUNS[name])
    return names


def describe(name: str) -> dict[str, Any]:
    return _get(name).describe()


def _get(name: str) -> _Lun:
    lun = _LUNS.get(name)
    if lun is None:
        raise LunError(f"no LUN named {name}; live: {', '.join(sorted(_LUNS)) or 'none'}")
    return lun


def map_again(name: str, lun_index: int, timeout: float = 30.0) -> dict[str, Any]:
    """Export LUN `name`'s backstore once more, as LUN `lun_index` of the same loopback
    target (one I_T nexus, several LUNs: what REPORT LUNS lists); waits for its sg node
    and the kernel's probe of it. Removed with the LUN (its target goes). Returns the
    new LUN's SCSI address and sg node."""
    lun = _get(name)
    if lun.target is None:
        raise LunError(f"LUN {name} has no loopback target")
    tpg = next(iter(lun.target.tpgs))
    LUN(tpg, lun_index, lun.storage)
    address = f"{_read(f'{tpg.path}/address').strip()}:{lun_index}"
    sg = _wait_for_sg(address, time.monotonic() + timeout)
    watchdog.settle(name, f"/sys/class/scsi_device/{address}/device", timeout)
    return {"address": address, "sg": sg}


def add_path(name: str, timeout: float = 30.0) -> dict[str, Any]:
    """Export LUN `name`'s backstore through one more loopback target, as its LUN 0: a
    second (third...) I_T nexus to the same device, with its own initiator port name,
    SCSI host and sg node (what persistent reservation and RESERVE tests between two
    initiators need). Waits for the sg node and the kernel's probe. Removed with the
    LUN. Returns the path's number (1, 2...), SCSI address, sg node, target and
    initiator WWNs."""
    lun = _get(name)
    target = Target(FabricModule("loopback"))
    try:
        tpg = TPG(target, 1)
        LUN(tpg, 0, lun.storage)
        address = f"{_read(f'{tpg.path}/address').strip()}:0"
        sg = _wait_for_sg(address, time.monotonic() + timeout)
        lun.paths.append(_Path(target, address, sg))
    except BaseException:
        target.delete()
        raise
    watchdog.settle(name, f"/sys/class/scsi_device/{address}/device", timeout)
    return {"path": len(lun.paths), **lun.paths[-1].describe()}


def kill_handler(name: str, signum: int = 9) -> int | None:
    """Kill a LUN's handler as a crash would; returns its exit code."""
    lun = _get(name)
    watchdog.expect_exit(name)
    os.kill(lun.handler.pid, signum)
    lun.handler.process.join(10)
    code = lun.handler.process.exitcode
    # multiprocessing's forkserver reports 255 when it lost the child's wait status (seen
    # in CI, and under load). The process was alive at os.kill() and SIGKILL cannot be
    # caught, so it died of it.
    if code == _FORKSERVER_LOST_STATUS and signum == signal.SIGKILL:
        return -signal.SIGKILL
    return code


def restart_handler(name: str, timeout: float = 30.0) -> dict[str, Any]:
    """Start a new handler on the LUN's live device (recovery: block, reset ring, remap,
    resume at the kernel's tail, unblock), after stopping the old one if it still runs."""
    lun = _get(name)
    watchdog.expect_exit(name)
    if lun.handler.alive():
        lun.handler.stop(timeout=5)
    lun.handler = handlers.start(
        lun.spec, lun.uio_name, log_path=lun.handler.log_path,
        output_path=lun.handler.output_path, recover=True, timeout=timeout,
    )  # fmt: skip
    watchdog.expect_exit(name, False)
    return lun.describe()


def remove_leftovers() -> list[str]:
    """Delete what leftovers() finds (after a failed teardown), so later LUNs start
    clean; returns what was removed."""
    from rtslib_fb import RTSRoot

    found = leftovers()
    if not found:
        return found
    live_wwns = {lun.target.wwn for lun in _LUNS.values() if lun.target is not None}
    live_wwns |= {path.target.wwn for lun in _LUNS.values() for path in lun.paths}
    root = RTSRoot()
    for target in root.targets:
        if target.fabric_module.name == "loopback" and target.wwn not in live_wwns:
            target.delete()
    for storage in root.storage_objects:
        if storage.plugin == "user" and storage.name not in _LUNS:
            storage.delete()
    return found


def leftovers() -> list[str]:
    """configfs entries of the kind the harness creates (user backstores, loopback
    targets) that belong to no live LUN. (Read directly: rtslib's RTSRoot() rewrites
    dbroot and logs a kernel error each time.)"""
    live = {os.path.basename(lun.storage.path) for lun in _LUNS.values()}
    live |= {lun.target.wwn for lun in _LUNS.values() if lun.target is not None}
    live |= {path.target.wwn for lun in _LUNS.values() for path in lun.paths}
    found = glob.glob(f"{CONFIGFS}/core/user_*/*/") + glob.glob(f"{CONFIGFS}/loopback/naa.*/")
    return sorted(
        path.rstrip("/").removeprefix(f"{CONFIGFS}/")
        for path in found
        if os.path.basename(path.rstrip("/")) not in live
    )


def _teardown(lun: _Lun) -> dict[str, Any]:
    _LUNS.pop(lun.name, None)
    watched = watchdog.unwatch(lun.name)
    if watched is not None and watched.implicated:
        watched.judged.wait(30)  # a judgement under way: its stack dump, the kill
    verdict = watched.verdict if watched is not None and not watched.reported else None
    errors = [verdict] if verdict else []
    handler = lun.handler
    if lun.target is not None and handler.alive() and _stuck(lun):
        errors.append(f"handler {lun.spec} was stuck at teardown (commands in flight, none "
                      f"answered for {STUCK_AFTER:.0f} s); it was killed; its threads, as "
                      f"faulthandler dumped them:\n{handler.dump_stacks().rstrip()}")
        handler.kill()
    # Removing the SCSI device may send commands (SYNCHRONIZE CACHE) to the handler: a
    # dead one would leave them to cmd_time_out, so a stand-in answers them.
    if lun.target is not None and not handler.alive():
        try:
            lun.handler = handlers.start(
                STAND_IN_HANDLER, lun.uio_name, recover=True, timeout=10,
                log_path=f"{RUN_DIR}/{lun.name}.stand-in.commands.jsonl",
                output_path=f"{RUN_DIR}/{lun.name}.stand-in.output.log",
            )  # fmt: skip
        except handlers.HandlerStartError as exc:
            errors.append(str(exc))
    steps: dict[str, float] = {}
    mark = time.monotonic()
    removals = [(f"path_{i + 1}_target", path.target.delete) for i, path in enumerate(lun.paths)]
    removals += [("target", lambda: lun.target and lun.target.delete()),
                 ("backstore", lun.storage.delete)]
    for name, action in removals:
        try:
            action()
        except Exception as exc:  # keep tearing down; report every failure
            errors.append(f"{type(exc).__name__}: {exc}")
        steps[name], mark = round(time.monotonic() - mark, 4), time.monotonic()
    stand_in_exit = lun.handler.stop() if lun.handler is not handler else None
    if stand_in_exit:
        errors.append(f"the stand-in handler exited with {stand_in_exit}")
    handler.process.join(EXIT_WAIT)
    if handler.alive():  # stuck where the watchdog did not look (vm.run, sg_raw, dd)
        errors.append(f"handler {lun.spec} did not exit within {EXIT_WAIT:.0f} s of its "
                      "device's removal; it was killed; its threads, as faulthandler dumped "
                      f"them:\n{handler.dump_stacks().rstrip()}")
        handler.kill()
    exit_code = handler.process.exitcode
    steps["handler_exit"] = round(time.monotonic() - mark, 4)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_disk_path(lun.name))
    return {
        "name": lun.name,
        "handler_exit_code": exit_code,
        "handler_output": handler.output_tail(),
        "errors": errors,
        "teardown_steps": steps,
    }


def _stuck(lun: _Lun) -> bool:
    """Commands in flight on the LUN for STUCK_AFTER s without a moment's pause."""
    deadline = time.monotonic() + STUCK_AFTER
    while time.monotonic() < deadline:
        try:
            if int(_read(f"{lun.scsi_dir}/device_busy")) == 0:
                return False
        except (OSError, ValueError):
            return False
        time.sleep(0.02)
    return True


def _disk_path(name: str) -> str:
    os.makedirs(DISK_DIR, exist_ok=True)
    return f"{DISK_DIR}/{name}.img"


def _uio_name(storage: UserBackedStorageObject) -> str:
    hba_index = os.path.basename(os.path.dirname(storage.path)).split("_", 1)[1]
    config = _read(f"{storage.path}/info").split("Config: ", 1)[1].split()[0]
    return f"tcm-user/{hba_index}/{storage.name}/{config}"


def block_device(name: str, timeout: float = 30.0, path: int = 0) -> str:
    """The LUN's /dev/sdX (through path `path`: 0 its own target, 1.. add_path's),
    waiting for the sd driver's (asynchronous) probe. Not part of create(): SG_IO needs
    only the sg node, and a handler that upsets the sd probe (NOT READY to TEST UNIT
    READY makes sd spin up for 100 s) must not stall set-up."""
    lun = _get(name)
    if path:
        lun.path_sg(path)  # names the valid paths when `path` is not one
        return _wait_for_node(lun.paths[path - 1].address, "block/sd*",
                              time.monotonic() + timeout)
    if not lun.sd:
        lun.sd = _wait_for_node(lun.address, "block/sd*", time.monotonic() + timeout)
    return lun.sd


def _wait_for_sg(address: str, deadline: float) -> str:
    return _wait_for_node(address, "scsi_generic/sg*", deadline)


def _wait_for_node(address: str, pattern: str, deadline: float) -> str:
    base = f"/sys/class/scsi_device/{address}/device"
    while True:
        found = glob.glob(f"{base}/{pattern}")
        if found:
            node = f"/dev/{os.path.basename(found[0])}"
            if os.path.exists(node):
                return node
        if pattern.startswith("block/") and os.path.exists(f"{base}/inquiry"):
            with open(f"{base}/inquiry", "rb") as f:
                qualifier = f.read(1)[0] >> 5
            if qualifier:  # scsi_bus_match binds upper drivers to qualifier 0 only
                raise LunError(
                    f"SCSI device {address} gets no /dev/sd node: its INQUIRY says peripheral "
                    f"qualifier {qualifier}, and the SCSI bus binds drivers such as sd only "
                    "to qualifier 0 (connected)"
                )
        if pattern.startswith("block/") and os.path.exists(f"{base}/type"):
            pdt = int(_read(f"{base}/type"))
            if pdt != 0:  # sd binds direct-access devices only
                raise LunError(
                    f"SCSI device {address} gets no /dev/sd node: its INQUIRY says peripheral "
                    f"device type {pdt}, and the sd driver takes only type 0 (direct access)"
                )
        if time.monotonic() > deadline:
            raise LunError(f"no {pattern.split('/')[0]} node appeared for SCSI device {address}")
        time.sleep(0.01)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
