"""Benchmark: VM boot, LUN set-up + teardown, and one CDB's round trip from the host.

    python benchmarks/lun_and_cdb.py [--kernel SPEC] [--handler SPEC] [--luns N] [--cdbs N]

Prints figures; asserts nothing (speed goals live here, not in timed tests). The CDB
round trip is split into the guest's SG_IO time (kernel + ring + handler) and the rest
(agent transport: host -> virtio-serial -> guest agent and back).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.lun import DEFAULT_HANDLER, LunManager, LunSpec
from initiator import cdb
from vm.config import VmConfig
from vm.machine import VirtualMachine


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(len(ordered) * 0.9) - 1] if len(ordered) >= 10 else ordered[-1]
    return (f"median {statistics.median(ordered) * 1e3:7.2f} ms  "
            f"min {ordered[0] * 1e3:7.2f} ms  p90 {p90 * 1e3:7.2f} ms  (n={len(ordered)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel")
    parser.add_argument("--handler", default=DEFAULT_HANDLER)
    parser.add_argument("--vm-cpus", type=int, default=2)
    parser.add_argument("--luns", type=int, default=10, help="LUN create/delete cycles")
    parser.add_argument("--cdbs", type=int, default=200, help="CDBs per kind")
    args = parser.parse_args()

    started = time.monotonic()
    with VirtualMachine(VmConfig(kernel=args.kernel, cpus=args.vm_cpus)) as vm:
        print(f"kernel {vm.kernel_version}, accelerator {vm.accel}, {args.vm_cpus} vCPUs, "
              f"handler {args.handler}")
        print(f"VM boot:      {vm.timings.summary()}")
        manager = LunManager(vm)
        spec = LunSpec(handler=args.handler)
        first = time.monotonic()
        manager.delete(manager.create(spec))
        print(f"first LUN:    {time.monotonic() - first:.2f} s set-up + teardown "
              f"(includes waiting for the warm-up; {time.monotonic() - started:.1f} s "
              "since start)")

        setup, teardown = [], []
        for _ in range(args.luns):
            t0 = time.monotonic()
            lun = manager.create(spec)
            t1 = time.monotonic()
            manager.delete(lun)
            setup.append(t1 - t0)
            teardown.append(time.monotonic() - t1)
        both = [a + b for a, b in zip(setup, teardown, strict=True)]
        print(f"LUN set-up:   {_ms(setup)}")
        print(f"LUN teardown: {_ms(teardown)}")
        print(f"LUN both:     {_ms(both)}")

        lun = manager.create(spec)
        for name, command, data_in in (
            ("TEST UNIT READY", cdb.test_unit_ready(), 0),
            ("READ(10) 4 KiB", cdb.read_10(0, 4096 // lun.block_size), 4096),
        ):
            total, guest = [], []
            for _ in range(args.cdbs):
                t0 = time.perf_counter()
                result = lun.cdb(command, data_in_len=data_in).expect_good()
                total.append(time.perf_counter() - t0)
                guest.append(result.duration_s)
            transport = [t - g for t, g in zip(total, guest, strict=True)]
            print(f"{name:16s} round trip from the host: {_ms(total)}")
            print(f"{'':16s} of which SG_IO in guest:   {_ms(guest)}")
            print(f"{'':16s} of which agent transport:  {_ms(transport)}")
        batch = [(cdb.test_unit_ready(), None, 0)] * 50
        per_cdb = []
        for _ in range(max(1, args.cdbs // 50)):
            t0 = time.perf_counter()
            for result in lun.cdbs(batch):
                result.expect_good()
            per_cdb.append((time.perf_counter() - t0) / len(batch))
        print(f"TEST UNIT READY  in batches of 50, per CDB:   {_ms(per_cdb)}")
        manager.delete(lun)
    return 0


if __name__ == "__main__":
    sys.exit(main())
