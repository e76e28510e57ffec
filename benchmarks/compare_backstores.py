"""Benchmark: the Python handlers against tcmu-runner and LIO's own backstores, in one VM.

    python benchmarks/compare_backstores.py [--kernel SPEC] [--accel tcg] [--runtime S]
        [--backstores NAME,...] [--luns N] [--cdbs N] [--out DIR]
    tcmu-harness bench [same options]

One VM boot: the cold boot time to the first guest command; fio (benchmarks.fio: 4 KiB
random read/write at QD1 and QD16, 1 MiB sequential read/write) on each backstore in
turn (benchmarks.guest_backstores: tcmu-runner's qcow handler on a raw image, the
Python RamDisk and FileDisk, rd_mcp, fileio, all exported through tcm_loop, images on
tmpfs); then LUN set-up/teardown and the SG_IO round trip from the host
(benchmarks.lun_and_cdb).
Prints the table with each Python figure as a ratio to tcmu-runner and rd_mcp and the
issue's goals; writes everything, with the host's load average at each step, to
reports/bench/<UTC timestamp>.json. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tcmu_harness.benchmarks import report
from tcmu_harness.benchmarks.guest_backstores import BACKSTORES
from tcmu_harness.benchmarks.lun_and_cdb import measure_cdbs, measure_luns, summarise
from tcmu_harness.lun import DEFAULT_HANDLER, LunManager, LunSpec
from tcmu_harness.vm.client import AgentError, VMError
from tcmu_harness.vm.config import ACCELERATORS, VmConfig
from tcmu_harness.vm.kernel import KernelError
from tcmu_harness.vm.machine import VirtualMachine

SUITE_WALL_TIME = "see the README's CI figure (fresh-clone `.ci/run`)"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare_backstores", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", default=os.environ.get("TCMU_HARNESS_KERNEL"))
    parser.add_argument("--accel", choices=ACCELERATORS,
                        default=os.environ.get("TCMU_HARNESS_ACCEL", "auto"))
    parser.add_argument("--vm-cpus", type=int, default=2)
    parser.add_argument("--vm-memory", type=int, default=1024, metavar="MIB")
    parser.add_argument("--size-mib", type=int, default=64, help="each LUN's size")
    parser.add_argument("--runtime", type=float, default=4.0, help="seconds per fio job")
    parser.add_argument("--ramp", type=float, default=1.0, help="fio ramp seconds per job")
    parser.add_argument("--backstores", default=",".join(BACKSTORES),
                        help=f"comma-separated subset of {','.join(BACKSTORES)}")
    parser.add_argument("--luns", type=int, default=5, help="LUN set-up/teardown cycles")
    parser.add_argument("--cdbs", type=int, default=100, help="SG_IO round trips per kind")
    parser.add_argument("--out", type=Path, default=Path("reports") / "bench")
    return parser


def check_args(args: argparse.Namespace) -> str | None:
    """One sentence for bad arguments, or None."""
    unknown = [k for k in args.backstores.split(",") if k and k not in BACKSTORES]
    if unknown:
        return f"unknown backstore {', '.join(unknown)}; choose from {', '.join(BACKSTORES)}"
    for name in ("runtime", "size_mib", "vm_cpus"):
        if getattr(args, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive"
    if args.ramp < 0 or args.luns < 0 or args.cdbs < 0:
        return "--ramp, --luns and --cdbs cannot be negative"
    return None


def run_backstores(vm: VirtualMachine, args: argparse.Namespace,
                   loads: dict[str, list[float]]) -> dict[str, Any]:
    """benchmarks.guest_backstores in the guest; its progress lines go to stderr, each
    stamped with the host's load average (also kept in `loads`)."""
    pending = ""
    backstore = ""

    def on_output(stream: str, data: bytes) -> None:
        nonlocal pending, backstore
        if stream != "stderr":
            return
        pending += data.decode(errors="replace")
        while "\n" in pending:
            line, pending = pending.split("\n", 1)
            load = _load()
            if line.startswith("bench:   "):  # a job's figures: under its backstore's name
                loads[f"{backstore} {line[9:].split(':', 1)[0]}"] = load
            elif line.startswith("bench: "):
                backstore = line[7:].split(":", 1)[0]
                loads[line[7:].strip()] = load
            print(f"{line}   [host load {load[0]:.2f}]", file=sys.stderr, flush=True)

    argv = [sys.executable, "-m", "tcmu_harness.benchmarks.guest_backstores",
            "--size", str(args.size_mib << 20), "--runtime", str(args.runtime),
            "--ramp", str(args.ramp), "--backstores", args.backstores]
    jobs = len([k for k in args.backstores.split(",") if k])
    timeout = jobs * ((args.runtime + args.ramp) * 6 + 400) + 60  # TCG on a loaded host
    done = vm.run(argv, cwd=os.getcwd(), timeout=timeout, on_output=on_output)
    if done.exit_code != 0 or done.timed_out:
        raise RuntimeError(f"the guest benchmark exited {done.exit_code} "
                           f"(timed out: {done.timed_out}): {done.stderr[-1500:]!r}")
    text = done.stdout.decode() if isinstance(done.stdout, bytes) else done.stdout
    return json.loads(text.strip().splitlines()[-1])


def other_figures_text(data: dict[str, Any]) -> str:
    lines = [f"VM cold boot to first guest command: {data['boot']['to_first_command_s']:.1f} s"]
    for kind, figures in data["backstores"].items():
        if "setup_s" in figures:
            lines.append(f"{kind:18s} backstore + LUN set-up (guest) {figures['setup_s']:.2f} s, "
                         f"teardown {figures['teardown_s']:.2f} s")
    harness_luns = data.get("harness_lun", {})
    for name, s in harness_luns.items():
        lines.append(f"harness LUN {name:9s} (host, {DEFAULT_HANDLER.split(':')[1]}): "
                     f"median {s['median_ms']:.0f} ms (n={s['n']})")
    for name, s in data.get("sg_io", {}).items():
        lines.append(f"SG_IO {name:22s} median {s['median_ms']:7.2f} ms, p90 "
                     f"{s['p90_ms']:7.2f} ms (n={s['n']})")
    lines.append(f"whole-suite wall time: {data['suite_wall_time']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"compare_backstores: {problem}", file=sys.stderr)
        return 4
    try:
        return _run(args)
    except (OSError, RuntimeError, ValueError, VMError, AgentError, KernelError) as exc:
        print(f"compare_backstores: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    loads: dict[str, list[float]] = {"start": _load()}
    data: dict[str, Any] = {"date": stamp, "host_cpus": os.cpu_count(),
                            "args": {k: str(v) for k, v in vars(args).items()}}
    started = time.monotonic()
    config = VmConfig(kernel=args.kernel, accel=args.accel, cpus=args.vm_cpus,
                      memory_mb=args.vm_memory)
    with VirtualMachine(config, name="bench") as vm:
        vm.run(["true"], timeout=60).check()
        boot = time.monotonic() - started
        loads["booted"] = _load()
        data.update(kernel=vm.kernel_version, accel=vm.accel, vm_cpus=args.vm_cpus,
                    boot={"to_first_command_s": round(boot, 2),
                          "timings": vars(vm.timings)})
        print(f"kernel {vm.kernel_version}, accelerator {vm.accel}, {args.vm_cpus} vCPUs; "
              f"booted in {boot:.1f} s", file=sys.stderr)
        guest = run_backstores(vm, args, loads)
        data["backstores"] = guest["backstores"]
        manager = LunManager(vm)
        spec = LunSpec(handler=DEFAULT_HANDLER)
        if args.luns:
            manager.delete(manager.create(spec))  # the first pays for the warm-up
            data["harness_lun"] = summarise(measure_luns(manager, spec, args.luns))
            loads["luns"] = _load()
        if args.cdbs:
            data["sg_io"] = summarise(measure_cdbs(manager, spec, args.cdbs))
            loads["sg_io"] = _load()
    data["wall_s"] = round(time.monotonic() - started, 1)
    data["suite_wall_time"] = SUITE_WALL_TIME
    fio_results = {kind: figures.get("jobs", {"error": figures.get("error", "?")})
                   for kind, figures in data["backstores"].items()}
    data["goals"] = report.goals(fio_results)
    loads["end"] = _load()
    data["host_load"] = loads
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stamp}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{stamp}: kernel {data['kernel']}, {data['accel']}, {args.vm_cpus} vCPUs, host load "
          f"(1/5/15 min) at start {loads['start']}, at end {loads['end']}")
    print(report.table(fio_results))
    print()
    print(report.goals_text(data["goals"]))
    print()
    print(other_figures_text(data))
    print(f"\nwritten to {path} ({data['wall_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
