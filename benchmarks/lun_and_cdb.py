"""Benchmark: VM boot, LUN set-up + teardown, and one CDB's round trip from the host.

    python benchmarks/lun_and_cdb.py [--kernel SPEC] [--handler SPEC] [--luns N] [--cdbs N]

Prints figures; asserts nothing (speed goals live here, not in timed tests). The CDB
round trip is split into the guest's SG_IO time (kernel + ring + handler) and the rest
(agent transport: host -> virtio-serial -> guest agent and back). measure_luns() and
measure_cdbs() are reused by benchmarks/compare_backstores.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcmu_harness.initiator import cdb
from tcmu_harness.lun import DEFAULT_HANDLER, LunManager, LunSpec
from tcmu_harness.vm.config import VmConfig
from tcmu_harness.vm.machine import VirtualMachine


def stats_ms(values: list[float]) -> dict[str, float | int]:
    """median, min and p90 in milliseconds, and the count."""
    ordered = sorted(values)
    p90 = ordered[int(len(ordered) * 0.9) - 1] if len(ordered) >= 10 else ordered[-1]
    return {"median_ms": round(statistics.median(ordered) * 1e3, 3),
            "min_ms": round(ordered[0] * 1e3, 3), "p90_ms": round(p90 * 1e3, 3),
            "n": len(ordered)}


def _ms(values: list[float]) -> str:
    s = stats_ms(values)
    return (f"median {s['median_ms']:7.2f} ms  min {s['min_ms']:7.2f} ms  "
            f"p90 {s['p90_ms']:7.2f} ms  (n={s['n']})")


def measure_luns(manager: LunManager, spec: LunSpec, cycles: int) -> dict[str, list[float]]:
    """`cycles` LUN create/delete cycles: seconds of set-up, teardown and both."""
    setup, teardown = [], []
    for _ in range(cycles):
        t0 = time.monotonic()
        lun = manager.create(spec)
        t1 = time.monotonic()
        manager.delete(lun)
        setup.append(t1 - t0)
        teardown.append(time.monotonic() - t1)
    return {"setup": setup, "teardown": teardown,
            "both": [a + b for a, b in zip(setup, teardown, strict=True)]}


def measure_cdbs(manager: LunManager, spec: LunSpec, count: int) -> dict[str, list[float]]:
    """Round trips from the host, and the guest's share (SG_IO), of TEST UNIT READY and
    a 4 KiB READ(10), `count` each, on one fresh LUN; plus TUR in batches of 50."""
    out: dict[str, list[float]] = {}
    lun = manager.create(spec)
    try:
        for name, command, data_in in (
            ("tur", cdb.test_unit_ready(), 0),
            ("read_4k", cdb.read_10(0, 4096 // lun.block_size), 4096),
        ):
            total, guest = [], []
            for _ in range(count):
                t0 = time.perf_counter()
                result = lun.cdb(command, data_in_len=data_in).expect_good()
                total.append(time.perf_counter() - t0)
                guest.append(result.duration_s)
            out[f"{name}_round_trip"] = total
            out[f"{name}_sg_io_in_guest"] = guest
            out[f"{name}_transport"] = [t - g for t, g in zip(total, guest, strict=True)]
        batch = [(cdb.test_unit_ready(), None, 0)] * 50
        per_cdb = []
        for _ in range(max(1, count // 50)):
            t0 = time.perf_counter()
            for result in lun.cdbs(batch):
                result.expect_good()
            per_cdb.append((time.perf_counter() - t0) / len(batch))
        out["tur_batched_per_cdb"] = per_cdb
    finally:
        manager.delete(lun)
    return out


def summarise(series: dict[str, list[float]]) -> dict[str, Any]:
    return {name: stats_ms(values) for name, values in series.items()}


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
        luns = measure_luns(manager, spec, args.luns)
        print(f"LUN set-up:   {_ms(luns['setup'])}")
        print(f"LUN teardown: {_ms(luns['teardown'])}")
        print(f"LUN both:     {_ms(luns['both'])}")
        cdbs = measure_cdbs(manager, spec, args.cdbs)
        for name, label in (("tur", "TEST UNIT READY"), ("read_4k", "READ(10) 4 KiB")):
            print(f"{label:16s} round trip from the host: {_ms(cdbs[f'{name}_round_trip'])}")
            print(f"{'':16s} of which SG_IO in guest:   {_ms(cdbs[f'{name}_sg_io_in_guest'])}")
            print(f"{'':16s} of which agent transport:  {_ms(cdbs[f'{name}_transport'])}")
        print(f"TEST UNIT READY  in batches of 50, per CDB:   {_ms(cdbs['tur_batched_per_cdb'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
