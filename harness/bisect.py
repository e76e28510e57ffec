"""tcmu-harness bisect-run: one step of `git bisect run`, pytest's outcome mapped to the
exit status git bisect reads.

    git bisect run sh -c 'make -j"$(nproc)" bzImage modules && \\
        make modules_install INSTALL_MOD_PATH=/tmp/mods >/dev/null || exit 125; \\
        tcmu-harness bisect-run --kernel-build-dir . --modules /tmp/mods -- \\
        suites/kernel/test_ring_semantics.py -k cmd_time_out'

It builds nothing: the kernel is the build tree's arch/x86/boot/bzImage with the modules
`make modules_install` put under MODROOT (default $INSTALL_MOD_PATH).

    0    good: pytest ran the selected tests and none failed
    1    bad: a test failed or errored (a kernel oops or taint caught by the kernel-log
         gate is a failure, so it is "bad" too)
    125  skip, the commit cannot be judged: no usable kernel at the build tree (the build
         failed or modules are missing), the VM did not boot, no test was selected,
         pytest was interrupted, hit an internal error or refused its arguments

Never 128 or above: git bisect run would abort the whole bisection on those.
Test paths are relative to the harness checkout (pytest runs there: its conftest and
options), or absolute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tcmu_harness import junit
from tcmu_harness.vm.config import default_cache_dir
from tcmu_harness.vm.kernel import KernelError, parse_kernel_spec, resolve_kernel

GOOD, BAD, SKIP = 0, 1, 125
_LABELS = {GOOD: "good", BAD: "bad", SKIP: "skip"}
HARNESS_ROOT = Path(__file__).resolve().parent.parent
# pytest's exit statuses (pytest.ExitCode) that say nothing about the kernel.
_PYTEST_NOT_A_VERDICT = {2: "pytest was interrupted or could not collect the tests",
                         3: "pytest hit an internal error",
                         4: "pytest refused its arguments (a usage error)",
                         5: "no test was selected"}


def kernel_spec(build_dir: str | None, modules: str | None, kernel: str | None) -> str:
    """The --kernel spec for this step: the build tree (with its modules) or as given."""
    if build_dir is None:
        return kernel or ""
    modules = modules or os.environ.get("INSTALL_MOD_PATH")
    if not modules:
        raise KernelError("--kernel-build-dir needs the modules too: give --modules MODROOT "
                          "(the INSTALL_MOD_PATH of `make modules_install`) or set "
                          "INSTALL_MOD_PATH")
    return f"{Path(build_dir).resolve()}:{Path(modules).resolve()}"


def verdict(exit_status: int, run: junit.Run | None) -> tuple[int, str]:
    """(bisect exit status, one-line reason) from pytest's exit status and its JUnit."""
    if exit_status < 0 or exit_status >= 128:
        return SKIP, f"pytest was killed (status {exit_status})"
    if exit_status in _PYTEST_NOT_A_VERDICT:
        return SKIP, _PYTEST_NOT_A_VERDICT[exit_status]
    if run is None:
        return SKIP, "pytest wrote no JUnit report"
    boot_error = run.properties.get("vm_boot_error")
    if boot_error:
        return SKIP, f"the VM did not boot: {boot_error.splitlines()[0]}"
    counts = ", ".join(f"{run.count(o)} {o}" for o in junit.OUTCOMES if run.count(o))
    if exit_status == 0:
        return GOOD, counts
    bad = [c.node_id for c in run.cases if c.outcome in ("failed", "error")]
    if exit_status == 1 and bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return BAD, f"{counts}: {shown}"
    return SKIP, f"pytest exited {exit_status} with {counts or 'no test cases'}"


def _absolute_paths(args: list[str]) -> list[str]:
    """Test paths that exist relative to the caller's directory, made absolute (pytest
    runs in the harness checkout); options and everything else unchanged."""
    out = []
    for arg in args:
        path = arg.split("::", 1)[0]
        if not arg.startswith("-") and path and Path(path).exists():
            arg = str(Path(path).resolve()) + arg[len(path):]
        out.append(arg)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcmu-harness bisect-run", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--kernel-build-dir", metavar="DIR",
                       help="a kernel build tree: its arch/x86/boot/bzImage is booted")
    where.add_argument("--kernel", help="any kernel spec instead (see --help of run)")
    parser.add_argument("--modules", metavar="MODROOT",
                        help="INSTALL_MOD_PATH of make modules_install (default: "
                             "$INSTALL_MOD_PATH)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        metavar="-- PYTEST_ARGS", help="what pytest runs (tests, -k, options)")
    return parser


def run(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or argparse's usage error (2)
        return GOOD if exc.code == 0 else _skip("bisect-run refused its arguments (above)")
    pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    try:
        spec = kernel_spec(args.kernel_build_dir, args.modules, args.kernel)
        kernel = resolve_kernel(parse_kernel_spec(spec),
                                args.cache_dir or default_cache_dir())  # fmt: skip
    except KernelError as exc:
        return _skip(f"no usable kernel: {exc}")
    print(f"tcmu-harness bisect-run: kernel {kernel.version} ({kernel.source})",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tcmu-harness-bisect-") as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                   f"--junitxml={report}", *_absolute_paths(pytest_args)]
        if spec:
            command.append(f"--tcmu-kernel={spec}")
        if args.cache_dir:
            command.append(f"--tcmu-cache-dir={args.cache_dir}")
        try:
            status = subprocess.run(command, cwd=HARNESS_ROOT, check=False).returncode
        except KeyboardInterrupt:
            return _skip("interrupted")
        try:
            result = junit.read_run(report)
        except junit.JunitError:
            result = None
    code, reason = verdict(status, result)
    print(f"tcmu-harness bisect-run: {code} ({_LABELS[code]}): {reason}", file=sys.stderr)
    return code


def _skip(reason: str) -> int:
    print(f"tcmu-harness bisect-run: {SKIP} ({_LABELS[SKIP]}): {reason}", file=sys.stderr)
    return SKIP


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
