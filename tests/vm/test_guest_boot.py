"""vm/guest_boot.py: the per-VM stage2 script.

Only lines this file recognises are ever executed (with mount/mkdir replaced by shell
functions that log): the script as a whole powers the machine off via sysrq."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tcmu_harness.vm.guest_boot import GUEST_RUN_DIR, stage2_script

SH = shutil.which("dash") or "/bin/sh"
VERSION = "6.1.0-56-amd64"
AWKWARD = "dir with spaces, 'single' and \"double\" quotes, $HOME, `id` and $(id)"


def script(
    tmp_path: Path,
    *,
    modules_dir: Path | None = None,
    python: str = "/usr/bin/python3",
    work_dir: Path | None = None,
    env: dict[str, str] | None = None,
    warmup: tuple[str, ...] = (),
) -> str:
    return stage2_script(
        kernel_version=VERSION,
        modules_dir=modules_dir or Path("/host/lib/modules") / VERSION,
        python=python,
        work_dir=work_dir or tmp_path,
        env={"PYTHONPATH": "/src"} if env is None else env,
        warmup=warmup,
    )


def syntax_ok(text: str) -> tuple[int, str]:
    result = subprocess.run([SH, "-n"], input=text.encode(), capture_output=True, check=False)
    return result.returncode, result.stderr.decode()


# -- text ----------------------------------------------------------------------------------


def test_the_script_in_order(tmp_path: Path) -> None:
    lines = script(tmp_path, work_dir=Path("/work/main")).splitlines()
    assert lines[0] == "#!/bin/sh"
    expected_order = [
        'console() { echo "tcmu-harness: $*" > /dev/console; }',
        'mount -t configfs configfs /sys/kernel/config || console "cannot mount configfs"',
        "mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts "
        '|| console "cannot mount devpts"',
        f"mkdir -p /lib/modules/{VERSION} && mount --bind /host/lib/modules/{VERSION} "
        f"/lib/modules/{VERSION} \\",
        f'    || console "cannot bind the kernel modules at /lib/modules/{VERSION}"',
        f"mkdir -p /etc/target/pr {GUEST_RUN_DIR}/handlers",
        'echo /etc/target > /sys/kernel/config/target/dbroot || console "cannot set the '
        'target dbroot"',
        "hostname tcmu-harness-guest",
        "export PYTHONPATH=/src",
        "/usr/bin/python3 -m tcmu_harness.vm.agent",
        'console "guest agent exited with status $?; powering off"',
        "sync",
        "echo o > /proc/sysrq-trigger",
        "sleep 60",
    ]
    positions = [lines.index(line) for line in expected_order]
    assert positions == sorted(positions)
    assert lines[-1] == "sleep 60"
    cd = [line for line in lines if line.startswith("cd ")]
    assert len(cd) == 1
    assert shlex.split(cd[0]) == ["cd", "/work/main", "||", "console", "cannot enter /work/main"]
    assert lines.index("export PYTHONPATH=/src") < lines.index(cd[0])
    assert lines.index(cd[0]) < lines.index("/usr/bin/python3 -m tcmu_harness.vm.agent")
    assert GUEST_RUN_DIR == "/run/tcmu-harness"


def test_warmup_functions_are_passed_to_the_agent(tmp_path: Path) -> None:
    lines = script(tmp_path, warmup=("tcmu_harness.lio.lun:warm", "vm.x:it's")).splitlines()
    agent = [line for line in lines if "-m tcmu_harness.vm.agent" in line]
    assert agent == ["/usr/bin/python3 -m tcmu_harness.vm.agent --warm tcmu_harness.lio.lun:warm "
                     "--warm 'vm.x:it'\"'\"'s'"]
    assert shlex.split(agent[0]) == [
        "/usr/bin/python3",
        "-m",
        "tcmu_harness.vm.agent",
        "--warm",
        "tcmu_harness.lio.lun:warm",
        "--warm",
        "vm.x:it's",
    ]


def test_the_export_line_quotes_every_value(tmp_path: Path) -> None:
    env = {"B": "two words", "A": "it's", "C": 'say "hi" $HOME `id`', "D": ""}
    lines = script(tmp_path, env=env).splitlines()
    export = [line for line in lines if line.startswith("export ")]
    assert len(export) == 1
    assert shlex.split(export[0]) == [
        "export",
        "A=it's",
        "B=two words",
        'C=say "hi" $HOME `id`',
        "D=",
    ]
    assert syntax_ok(export[0]) == (0, "")


@pytest.mark.parametrize(
    "name", ["plain", "with spaces", "it's", "say \"hi\" 'there'", "$HOME and `id`"]
)
def test_the_script_is_valid_shell_for_awkward_paths(tmp_path: Path, name: str) -> None:
    text = script(
        tmp_path,
        modules_dir=tmp_path / name / "modules",
        python=str(tmp_path / name / "python3"),
        work_dir=tmp_path / name / "checkout",
        env={"X": name},
    )
    assert syntax_ok(text) == (0, "")


def test_the_script_is_valid_shell_for_a_path_with_one_double_quote(tmp_path: Path) -> None:
    """BUG: the `cd` fallback message puts work_dir unquoted inside "...": a single
    double quote in the path leaves the script with an unterminated string."""
    text = script(tmp_path, work_dir=Path('/srv/the "checkout'))
    assert syntax_ok(text) == (0, "")


# -- running the recognised lines -------------------------------------------------------------


def runnable_part(text: str, console: Path) -> str:
    """console(), the modules bind mount, export, cd, the agent and its exit message,
    with mount/mkdir logging instead of acting and /dev/console redirected."""
    lines = text.splitlines()
    keep: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("console() {"):
            assert line.count("> /dev/console") == 1
            assert shlex.quote(str(console)) == str(console)
            keep.append(line.replace("> /dev/console", f">> {console}"))  # a file, not a tty
        elif line.startswith("mkdir -p /lib/modules/") or line.startswith("mkdir -p '/lib"):
            keep += [line, lines[i + 1]]
        elif (
            line.startswith(("export ", "cd ", 'console "guest agent exited'))
            or "-m tcmu_harness.vm.agent" in line
        ):
            keep.append(line)
    assert len(keep) == 7, keep
    prelude = [
        'mount() { printf "mount"; printf "|%s" "$@"; echo; }',
        'mkdir() { printf "mkdir"; printf "|%s" "$@"; echo; }',
    ]
    return "\n".join([*prelude, *keep, ""])


def run_part(tmp_path: Path, text: str) -> tuple[str, str, str]:
    """stdout, stderr and what went to the console."""
    console = tmp_path / "console.log"
    result = subprocess.run(
        [SH, "-c", runnable_part(text, console)],
        capture_output=True,
        check=False,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    console_text = console.read_text() if console.exists() else ""
    return result.stdout.decode(), result.stderr.decode(), console_text


def fake_python(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "python3"
    path.write_text(
        "#!/bin/sh\n"
        'printf "cwd=%s\\n" "$(pwd)"\n'
        'printf "arg=%s\\n" "$@"\n'
        'printf "X=%s\\n" "$X"\n'
        'printf "EMPTY=%s\\n" "${EMPTY-unset}"\n'
        "exit 3\n"
    )
    path.chmod(0o755)
    return path


def test_running_with_awkward_paths(tmp_path: Path) -> None:
    base = tmp_path / AWKWARD
    checkout = base / "checkout"
    checkout.mkdir(parents=True)
    python = fake_python(base / "bin")
    modules = base / "lib" / "modules" / VERSION
    text = script(
        tmp_path,
        modules_dir=modules,
        python=str(python),
        work_dir=checkout,
        env={"X": AWKWARD, "EMPTY": ""},
    )
    out, err, console = run_part(tmp_path, text)
    assert err == ""
    assert out.splitlines() == [
        f"mkdir|-p|/lib/modules/{VERSION}",
        f"mount|--bind|{modules}|/lib/modules/{VERSION}",
        f"cwd={checkout}",
        "arg=-m",
        "arg=tcmu_harness.vm.agent",
        f"X={AWKWARD}",
        "EMPTY=",
    ]
    assert console == "tcmu-harness: guest agent exited with status 3; powering off\n"


def test_a_missing_checkout_is_reported_with_its_exact_path(tmp_path: Path) -> None:
    """BUG: the `cd` fallback message puts work_dir unquoted inside "...", so `$(...)`,
    backticks and `$VAR` in the path are expanded (and run) by the guest shell."""
    python = fake_python(tmp_path / "bin")
    missing = tmp_path / AWKWARD / "missing"
    out, err, console = run_part(
        tmp_path, script(tmp_path, python=str(python), work_dir=missing)
    )
    assert out.splitlines()[2] == "cwd=/"  # the agent still starts, from /
    assert err.endswith(f"can't cd to {missing}\n")
    assert console.splitlines() == [
        f"tcmu-harness: cannot enter {missing}",
        "tcmu-harness: guest agent exited with status 3; powering off",
    ]
