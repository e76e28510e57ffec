"""tcmu-harness: boot the VM, serve one LUN with a handler, run something against it.

    tcmu-harness run [options] -- COMMAND [ARGS...]
    tcmu-harness shell [options]
    tcmu-harness handler-info SPEC       a handler's storage methods and options (no VM)
    tcmu-harness compare RUN_A RUN_B     tests whose outcome changed between two runs
    tcmu-harness summary RUN [RUN...] [--shards] [--out DIR]   a run's summary.html and .md
    tcmu-harness vm up|status|down       a VM that stays up; pytest --tcmu-vm-attach uses it
    tcmu-harness bisect-run [--kernel-build-dir DIR] -- PYTEST_ARGS
                                         one `git bisect run` step (0 good, 1 bad, 125 skip)

In the guest COMMAND runs as root with TCMU_SG set to the LUN's /dev/sgN, and TCMU_DISK
to its /dev/sdX when COMMAND names $TCMU_DISK (only then is the sd node looked for: a
handler that sd does not bind, peripheral type 5 or qualifier 1, still runs commands
that use only $TCMU_SG). The literal words $TCMU_SG and $TCMU_DISK in ARGS are replaced
too, so quote them on the host: `tcmu-harness run -- sg_inq '$TCMU_SG'`. For pipes and
redirections run a shell: `tcmu-harness run -- sh -c 'sg_inq $TCMU_SG | head -3'`.

--paths N exports the one backstore through N tcm_loop targets: N I_T nexuses, each its
own initiator port and sg node, as reservation and multipath reproductions need. Path 1
is TCMU_SG (TCMU_DISK), path 2 TCMU_SG_2 (TCMU_DISK_2), and so on:
`tcmu-harness run --paths 2 -- sh -c 'sg_persist -o -G -S 1 $TCMU_SG; sg_persist -k $TCMU_SG_2'`.

The handler spec and its options are checked on the host before the VM boots.

Exit status: COMMAND's own status; 4 for a usage error (bad option, unsatisfiable
--kernel, bad handler spec or handler option); 125 when the harness itself could not
set up (the VM did not boot, the LUN could not be created, COMMAND names $TCMU_DISK but
the LUN got no sd node): `git bisect run` skips such a commit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from tcmu.describe import describe as describe_handler
from tcmu_harness import bisect, compare, kept_vm, summary
from tcmu_harness.geometry import check_geometry, parse_size
from tcmu_harness.lun import (
    DEFAULT_HANDLER,
    HandlerOptionError,
    HandlerSetupError,
    Lun,
    LunManager,
    LunSpec,
    check_handler,
    handler_spec_from_cli,
)
from tcmu_harness.options import BY_NAME, OPTIONS, add_arguments, resolve
from tcmu_harness.vm.client import AgentError, VMError
from tcmu_harness.vm.config import VmConfig, default_cache_dir
from tcmu_harness.vm.kernel import KernelError
from tcmu_harness.vm.machine import VirtualMachine

EXIT_USAGE = 4
EXIT_SETUP = 125
GUEST_VARS = ("TCMU_SG", "TCMU_DISK")
# $TCMU_DISK, ${TCMU_DISK_2}...: the sd nodes a command line names (path numbers from 1)
_DISK_WORD = re.compile(r"\$\{?TCMU_DISK(?:_(\d+))?(?![A-Za-z0-9_])")


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    machine = argparse.ArgumentParser(add_help=False)  # the VM's options
    _add_table_options(machine, "vm")
    machine.add_argument("-v", "--verbose", action="store_true", help="say what the VM does")
    common = argparse.ArgumentParser(add_help=False, parents=[machine])
    _add_table_options(common, "lun")
    common.add_argument("--paths", type=int, default=1, metavar="N",
                        help="I_T nexuses to the LUN (default 1): TCMU_SG, TCMU_SG_2 ... "
                             "TCMU_SG_N (and TCMU_DISK_2 ...)")

    parser = argparse.ArgumentParser(prog="tcmu-harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="run COMMAND in the guest")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    sub.add_parser("shell", parents=[common], help="an interactive shell in the guest")
    info = sub.add_parser("handler-info", help="a handler's storage methods and options")
    info.add_argument("spec", metavar="SPEC",
                      help="'package.module:Class' or 'path/file.py:Class' [KEY=VALUE ...]")
    diff = sub.add_parser("compare", help="tests whose outcome changed between two runs "
                          "(exit 1 when any did)")
    diff.add_argument("runs", nargs=2, metavar="RUN", help="JUnit XML or a reports/<run id>/")
    sub.add_parser("summary", add_help=False,
                   help="write a run's summary.html and summary.md (several runs: a matrix; "
                        "--shards: one run's CI shards merged; see summary --help)")
    kept = sub.add_parser("vm", parents=[machine],
                          help="a VM that stays up between sessions (pytest --tcmu-vm-attach)")
    kept.add_argument("action", choices=("up", "down", "status"))
    sub.add_parser("bench", add_help=False,
                   help="compare the Python handlers with tcmu-runner and LIO's backstores "
                        "under fio, in one VM (see bench --help)")
    # Listed for --help; main() hands its arguments to harness.bisect unparsed.
    sub.add_parser("bisect-run", add_help=False,
                   help="one `git bisect run` step: pytest's outcome as 0 good, 1 bad, "
                        "125 skip (see bisect-run --help)")
    _usage_errors_exit_4(parser)
    return parser


def _add_table_options(parser: argparse.ArgumentParser, group: str) -> None:
    """harness/options.py's options of `group` ("vm", "lun") as --NAME."""
    for option in OPTIONS:
        if group in option.cli:
            many = option.many if option.cli_many is None else option.cli_many
            add_arguments(parser.add_argument, replace(option, many=many), f"--{option.name}")


def _resolve_table_options(args: argparse.Namespace) -> None:
    """Options not given on the command line from TCMU_HARNESS_<NAME>, else the table's
    defaults; `run` and `shell` serve one handler."""
    resolve([o for o in OPTIONS if o.cli and hasattr(args, o.dest)], args)
    if isinstance(args.__dict__.get("handler"), list):  # not on the command line
        handlers = args.handler or [DEFAULT_HANDLER]
        if len(handlers) > 1:
            raise UsageError(f"{BY_NAME['handler'].env} names {len(handlers)} handlers; "
                             f"{args.command} serves one: give --handler")
        args.handler = handlers[0]


def _usage_errors_exit_4(parser: argparse.ArgumentParser) -> None:
    """argparse exits 2 on a bad option; this tool promises 4 for every usage error
    (2 is what many guest commands return, so it must not mean "bad option" here)."""

    def error(message: str, parser: argparse.ArgumentParser = parser) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _usage_errors_exit_4(child)


def substitute(argv: list[str], values: dict[str, str]) -> list[str]:
    """$NAME and ${NAME} of `values` replaced in every word; $TCMU_SG does not match
    the start of $TCMU_SG_2 (a name ends where letters, digits and _ do)."""
    word = re.compile(r"\$(\{)?([A-Za-z_][A-Za-z0-9_]*)(?(1)\})")

    def value(match: re.Match[str]) -> str:
        return values.get(match.group(2), match.group(0))

    return [word.sub(value, arg) for arg in argv]


@contextlib.contextmanager
def _session(args: argparse.Namespace) -> Iterator[tuple[VirtualMachine, Lun]]:
    log: Callable[[str], None] = (
        (lambda m: print(f"tcmu-harness: {m}", file=sys.stderr)) if args.verbose else
        (lambda m: None)
    )
    config = _vm_config(args)
    extra = list(args.handler_opt)
    if not 0 <= args.physical_block_exponent <= 15:
        raise UsageError("--physical-block-exponent must be 0..15 (a 4-bit field)")
    if args.physical_block_exponent:
        extra.append(f"physical_block_exponent={args.physical_block_exponent}")
    handler, options = handler_spec_from_cli(args.handler, extra)
    check_handler(handler, options)  # before booting: a bad spec is a usage error
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    check_geometry(size, args.block_size)
    if args.paths < 1:
        raise UsageError(f"--paths {args.paths}: give 1 or more I_T nexuses")
    attributes = {} if args.cmd_time_out is None else {"cmd_time_out": args.cmd_time_out}
    spec = LunSpec(size=size, block_size=args.block_size, handler=handler,
                   handler_options=options, paths=args.paths, attributes=attributes)
    # Milestones on a terminal (or with -v): the boot takes tens of seconds under TCG and a
    # silent wait reads as a hang. Scripts and pipes see only the guest command's output.
    progress = log if args.verbose else (
        (lambda m: print(f"tcmu-harness: {m}", file=sys.stderr, flush=True))
        if sys.stderr.isatty() else log)
    started = time.monotonic()
    progress("booting the VM (tens of seconds without KVM)...")
    with VirtualMachine(config, log=log, name="cli") as vm:
        progress(f"VM up after {time.monotonic() - started:.0f} s (kernel "
                 f"{vm.kernel.version if vm.kernel else '?'}, {vm.accel}); creating the LUN...")
        manager = LunManager(vm)
        lun = manager.create(spec)
        nodes = " ".join(path.sg for path in lun.paths)
        progress(f"LUN {lun.name} ready after {time.monotonic() - started:.0f} s: {nodes} "
                 f"served by {args.handler}")
        try:
            yield vm, lun
        finally:
            if vm.alive:
                report = manager.delete(lun)
                for error in report["errors"]:
                    print(f"tcmu-harness: teardown: {error}", file=sys.stderr)


class NoDiskError(Exception):
    """COMMAND names $TCMU_DISK but the LUN got no sd node: the handler's doing (what it
    answers to INQUIRY or to sd's probe), so not a usage error."""


def guest_values(lun: Lun, argv: list[str] | None) -> dict[str, str]:
    """TCMU_SG[_N] for every path; TCMU_DISK[_N] for those `argv` names (every path
    whose sd node exists, best effort, when argv is None: the interactive shell)."""
    values: dict[str, str] = {}
    named = {int(m.group(1) or 1) for arg in argv or [] for m in _DISK_WORD.finditer(arg)}
    for number, path in enumerate(lun.paths, start=1):
        suffix = "" if number == 1 else f"_{number}"
        values[f"TCMU_SG{suffix}"] = path.sg
        if argv is not None and number not in named:
            continue
        try:
            values[f"TCMU_DISK{suffix}"] = path.sd
        except AgentError as exc:
            if exc.exc_type != "LunError":
                raise
            if argv is not None:
                raise NoDiskError(f"the command names $TCMU_DISK{suffix}, but {exc.message}"
                                  ) from None
    return values


def _run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError(
            "give the command to run after --, e.g. tcmu-harness run -- sg_inq '$TCMU_SG'"
        )
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def relay(stream: str, data: bytes) -> None:
        target = out if stream == "stdout" else err
        target.write(data)
        target.flush()

    with _session(args) as (vm, lun):
        values = guest_values(lun, argv)
        result = vm.run(substitute(argv, values), env=values, timeout=args.timeout,
                        on_output=relay)
        if result.timed_out:
            print(f"tcmu-harness: {argv[0]} was killed after {args.timeout:.0f} s",
                  file=sys.stderr)
        return result.exit_code if result.exit_code >= 0 else 128 - result.exit_code


def _shell(args: argparse.Namespace) -> int:
    if not sys.stdin.isatty():
        raise UsageError("tcmu-harness shell needs a terminal; use tcmu-harness run for scripts")
    with _session(args) as (vm, lun):
        values = guest_values(lun, None)
        shown = " ".join(f"{k}={v}" for k, v in values.items())
        print(f"tcmu-harness: guest shell; {shown}; "
              "exit the shell to tear everything down", file=sys.stderr)
        cols, rows = shutil.get_terminal_size()
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        try:
            def pump(send: Callable[[bytes], None]) -> None:
                def loop() -> None:
                    with contextlib.suppress(OSError, VMError):
                        while data := os.read(0, 4096):
                            send(data)
                threading.Thread(target=loop, daemon=True).start()

            def show(data: bytes) -> None:
                os.write(1, data)

            return vm.run_interactive(
                ["/bin/bash", "-i"], env={**values, "PS1": "tcmu-guest# "},
                rows=rows, cols=cols, on_output=show, on_started=pump,
            )  # fmt: skip
        finally:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _vm_config(args: argparse.Namespace, log_dir: Path | None = None) -> VmConfig:
    return VmConfig(kernel=args.kernel, memory_mb=args.vm_memory, cpus=args.vm_cpus,
                    accel=args.accel, request_timeout=args.vm_request_timeout,
                    cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                    log_dir=log_dir)


def _kept_vm(args: argparse.Namespace) -> int:
    config = _vm_config(args, log_dir=Path.cwd() / "reports" / "vm")
    action = {"up": kept_vm.up, "down": kept_vm.down, "status": kept_vm.status}[args.action]
    return action(config)


def _handler_info(args: argparse.Namespace) -> int:
    handler, options = handler_spec_from_cli(args.spec, [])
    spec = check_handler(handler, options)
    print(describe_handler(spec.cls, args.spec.split()[0]))
    return 0


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _bench(argv: list[str]) -> int:
    """benchmarks/compare_backstores.py (tcmu_harness.benchmarks), imported only when
    asked for."""
    from tcmu_harness.benchmarks import compare_backstores

    return int(compare_backstores.main(argv))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bisect-run"]:  # its exit statuses are git bisect's, not ours
        return bisect.run(argv[1:])
    if argv[:1] == ["bench"]:  # benchmarks/compare_backstores.py parses its own options
        return _bench(argv[1:])
    if argv[:1] == ["summary"]:  # harness/summary.py parses its own options
        return summary.main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the VM is powered off and its temp dir removed.
    signal.signal(signal.SIGTERM, _sigterm)
    # A script's background job inherits SIGINT ignored (and Python keeps it so): Ctrl-C
    # and `kill -INT` must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _resolve_table_options(args)
        if args.command == "handler-info":
            return _handler_info(args)
        if args.command == "compare":
            return compare.main(args.runs)
        if args.command == "vm":
            return _kept_vm(args)
        return _run(args) if args.command == "run" else _shell(args)
    except (UsageError, HandlerOptionError, KernelError, ValueError) as exc:
        print(f"tcmu-harness: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (HandlerSetupError, NoDiskError) as exc:  # the handler died, hung, failed to start
        print(f"tcmu-harness: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except AgentError as exc:
        # A guest-side refusal of our input (a bad handler spec) is a usage error.
        usage = exc.exc_type in ("HandlerSpecError", "LunError")
        print(f"tcmu-harness: {exc.message if usage else exc}", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_SETUP
    except VMError as exc:
        print(f"tcmu-harness: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("tcmu-harness: interrupted; the VM was shut down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
