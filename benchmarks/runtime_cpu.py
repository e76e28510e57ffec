"""The Python runtime's CPU time per command, on the host, without a VM: a fake kernel
(tests/tcmu/fakering.py) queues 4 KiB READ(10)s for a RamDisk and the runner serves them
(Runner._pump: fetch, handle, complete, command log, one kick per batch).

    python benchmarks/runtime_cpu.py [--commands N] [--rounds R] [--tree CHECKOUT]

Prints the runner thread's CPU microseconds per command at queue depth 1 and 16 (the
fake kernel's own work is not counted). CPU time, not wall time, so a loaded host
changes it far less than it changes fio in a TCG guest; --tree measures another
checkout's tcmu/ (e.g. a `git worktree` of an older commit) with this fake kernel, to
compare runtimes: run them interleaved and compare ratios.
"""

from __future__ import annotations

import argparse
import inspect
import random
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SIZE = 64 << 20
BLOCK = 512
READ_10 = struct.Struct(">BBIBHB")


def _read_10(rnd: random.Random) -> bytes:
    lba = rnd.randrange(0, SIZE // BLOCK - 8) & ~7  # 4 KiB aligned
    return READ_10.pack(0x28, 0, lba, 0, 8, 0)


def measure(commands: int, depths: tuple[int, ...] = (1, 16)) -> dict[int, float]:
    """{queue depth: runner CPU microseconds per command}; every command must come back
    GOOD with its 4 KiB (AssertionError otherwise)."""
    from fakering import FakeKernel

    from tcmu import uio as uiomod
    from tcmu.cmdlog import CommandLog
    from tcmu.handler import DeviceInfo
    from tcmu.handlers.ramdisk import RamDisk
    from tcmu.runner import Runner

    dev = DeviceInfo("uio0", "tcm-user/1/b/ramdisk/x", 1, "b", "ramdisk/x", SIZE, BLOCK, False)
    handler = RamDisk(dev)
    handler.open()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    kernel = FakeKernel(data_pages=128)
    with tempfile.TemporaryDirectory() as tmp:
        # As serve() builds it in that checkout (older ones have no batched log).
        batched = "batched" in inspect.signature(CommandLog).parameters
        log = CommandLog(f"{tmp}/cmds.jsonl", **({"batched": True} if batched else {}))
        runner = Runner(uiomod.UioDevice(ours.fileno(), kernel.buf), handler, log_file=log)
        rnd = random.Random(1)
        out = {}
        try:
            for depth in depths:
                cpu = 0
                batches = max(1, commands // depth)
                for i in range(batches):
                    for _ in range(depth):
                        kernel.queue_cmd(_read_10(rnd), data_in=4096, notify=False)
                    t0 = time.thread_time_ns()
                    runner._pump()
                    cpu += time.thread_time_ns() - t0
                    done = kernel.reap()
                    assert len(done) == depth, f"{len(done)} of {depth} commands completed"
                    assert all(c.status == 0 and len(c.data_in) == 4096 for c in done), done
                    if i % 64 == 63:
                        _drain(theirs)  # the kicks
                out[depth] = cpu / 1000 / (batches * depth)
        finally:
            runner.close()
            log.close()
            handler.close()
            ours.close()
            theirs.close()
    return out


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=6000, help="per queue depth")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tree", type=Path, default=PROJECT,
                        help="the checkout whose tcmu/ is measured (default: this one)")
    args = parser.parse_args(argv)
    if args.commands < 16 or args.rounds < 1:
        print("runtime_cpu: --commands must be at least 16 and --rounds at least 1",
              file=sys.stderr)
        return 4
    if not (args.tree / "tcmu" / "runner.py").is_file():
        print(f"runtime_cpu: {args.tree} has no tcmu/runner.py", file=sys.stderr)
        return 4
    sys.path[:0] = [str(args.tree.resolve()), str(PROJECT / "tests" / "tcmu")]
    for module in [m for m in sys.modules if m == "tcmu" or m.startswith("tcmu.")]:
        del sys.modules[module]
    import tcmu

    print(f"runtime: {Path(tcmu.__file__).parent}", flush=True)
    for _ in range(args.rounds):
        figures = measure(args.commands)
        print(", ".join(f"QD{d}: {us:.1f} us/command" for d, us in figures.items()),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
