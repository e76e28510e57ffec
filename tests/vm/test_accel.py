"""vm/accel.py: choose_accel and its cache, probe_kvm's early answers (no real QEMU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tcmu_harness.vm import accel
from tcmu_harness.vm.accel import AccelChoice, choose_accel, probe_initramfs, probe_kvm

QEMU = "qemu-system-x86_64"
BOOT_ID = "5f3c0c57-1b8e-4a57-9d4c-7c2f4e1b0a11"


class FakeProbe:
    def __init__(self, works: bool, why: str) -> None:
        self.answer = (works, why)
        self.calls: list[tuple[str, Path]] = []

    def __call__(self, qemu_binary: str, kernel_image: Path) -> tuple[bool, str]:
        self.calls.append((qemu_binary, kernel_image))
        return self.answer


@pytest.fixture
def boot_id(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    current = [BOOT_ID]
    monkeypatch.setattr(accel, "_boot_id", lambda: current[0])
    return current


def install(monkeypatch: pytest.MonkeyPatch, works: bool, why: str) -> FakeProbe:
    probe = FakeProbe(works, why)
    monkeypatch.setattr(accel, "probe_kvm", probe)
    return probe


def test_tcg_never_probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    probe = install(monkeypatch, True, "unused")
    assert choose_accel("tcg", QEMU, tmp_path / "bzImage", tmp_path / "cache") == AccelChoice(
        "tcg", "requested"
    )
    assert probe.calls == []
    assert not (tmp_path / "cache").exists()


def test_kvm_requested_and_working(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    probe = install(monkeypatch, True, "a KVM probe guest booted")
    kernel = tmp_path / "bzImage"
    assert choose_accel("kvm", QEMU, kernel, tmp_path / "cache") == AccelChoice("kvm", "requested")
    assert probe.calls == [(QEMU, kernel)]


def test_kvm_requested_but_the_probe_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, False, "/dev/kvm does not exist")
    with pytest.raises(RuntimeError) as info:
        choose_accel("kvm", QEMU, tmp_path / "bzImage", tmp_path / "cache")
    assert str(info.value) == (
        "the kvm accelerator was requested but /dev/kvm does not exist; ask for tcg or auto"
    )


def test_kvm_requested_is_never_answered_from_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: list[str]
) -> None:
    kernel, cache = tmp_path / "bzImage", tmp_path / "cache"
    install(monkeypatch, True, "a KVM probe guest booted")
    choose_accel("auto", QEMU, kernel, cache)
    probe = install(monkeypatch, False, "the KVM probe guest failed (exit status 1)")
    with pytest.raises(RuntimeError):
        choose_accel("kvm", QEMU, kernel, cache)
    assert probe.calls == [(QEMU, kernel)]


def test_auto_probes_once_and_caches_the_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: list[str]
) -> None:
    kernel, cache = tmp_path / "bzImage", tmp_path / "cache"
    probe = install(monkeypatch, True, "a KVM probe guest booted")
    assert choose_accel("auto", QEMU, kernel, cache) == AccelChoice(
        "kvm", "a KVM probe guest booted"
    )
    assert probe.calls == [(QEMU, kernel)]
    assert json.loads((cache / "kvm-probe.json").read_text()) == {
        "boot_id": BOOT_ID,
        "qemu": QEMU,
        "kernel": str(kernel),
        "works": True,
        "why": "a KVM probe guest booted",
    }
    assert sorted(p.name for p in cache.iterdir()) == ["kvm-probe.json"]

    assert choose_accel("auto", QEMU, kernel, cache) == AccelChoice(
        "kvm", "a KVM probe guest booted (cached)"
    )
    assert probe.calls == [(QEMU, kernel)]


def test_auto_caches_a_failure_as_tcg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: list[str]
) -> None:
    kernel, cache = tmp_path / "bzImage", tmp_path / "cache"
    why = "a KVM guest did not boot within 10 s (/dev/kvm hangs)"
    probe = install(monkeypatch, False, why)
    assert choose_accel("auto", QEMU, kernel, cache) == AccelChoice("tcg", why)
    assert choose_accel("auto", QEMU, kernel, cache) == AccelChoice("tcg", f"{why} (cached)")
    assert len(probe.calls) == 1


@pytest.mark.parametrize("change", ["kernel", "qemu", "boot_id"])
def test_auto_probes_again_when_the_key_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: list[str], change: str
) -> None:
    kernel, cache = tmp_path / "bzImage", tmp_path / "cache"
    probe = install(monkeypatch, True, "a KVM probe guest booted")
    choose_accel("auto", QEMU, kernel, cache)
    qemu = QEMU
    if change == "kernel":
        kernel = tmp_path / "other-bzImage"
    elif change == "qemu":
        qemu = "/opt/qemu/bin/qemu-system-x86_64"
    else:
        boot_id[0] = "another-boot"
    probe.answer = (False, "the KVM probe guest failed (exit status 1)")
    assert choose_accel("auto", qemu, kernel, cache) == AccelChoice(
        "tcg", "the KVM probe guest failed (exit status 1)"
    )
    assert probe.calls == [(QEMU, tmp_path / "bzImage"), (qemu, kernel)]
    # the new verdict replaced the old one
    assert json.loads((cache / "kvm-probe.json").read_text()) == {
        "boot_id": boot_id[0],
        "qemu": qemu,
        "kernel": str(kernel),
        "works": False,
        "why": "the KVM probe guest failed (exit status 1)",
    }


@pytest.mark.parametrize("content", ["", "{not json", '{"boot_id": "x"}', '{"works": true}'])
def test_auto_probes_when_the_cache_is_unusable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: list[str], content: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "kvm-probe.json").write_text(content)
    probe = install(monkeypatch, True, "a KVM probe guest booted")
    assert choose_accel("auto", QEMU, tmp_path / "bzImage", cache) == AccelChoice(
        "kvm", "a KVM probe guest booted"
    )
    assert len(probe.calls) == 1


def test_auto_cache_entry_without_verdict_fields_probes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: list[str]
) -> None:
    kernel, cache = tmp_path / "bzImage", tmp_path / "cache"
    cache.mkdir()
    key = {"boot_id": BOOT_ID, "qemu": QEMU, "kernel": str(kernel)}
    (cache / "kvm-probe.json").write_text(json.dumps(key))  # no works/why: KeyError
    probe = install(monkeypatch, True, "a KVM probe guest booted")
    assert choose_accel("auto", QEMU, kernel, cache).reason == "a KVM probe guest booted"
    assert len(probe.calls) == 1


def test_auto_probes_when_the_cache_is_json_but_not_an_object(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, boot_id: list[str]
) -> None:
    """BUG: `cached.get` on a list/None/str/int raises AttributeError, which the except
    clause (OSError, ValueError, KeyError) does not catch: choose_accel crashes instead
    of probing again."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "kvm-probe.json").write_text("[]")
    probe = install(monkeypatch, True, "a KVM probe guest booted")
    assert choose_accel("auto", QEMU, tmp_path / "bzImage", cache) == AccelChoice(
        "kvm", "a KVM probe guest booted"
    )
    assert len(probe.calls) == 1


def test_boot_id_is_the_kernels() -> None:
    path = Path("/proc/sys/kernel/random/boot_id")
    expected = path.read_text().strip() if path.exists() else "unknown"
    assert accel._boot_id() == expected


# -- probe_kvm -------------------------------------------------------------------------


def test_probe_without_dev_kvm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_exists = os.path.exists
    asked: list[str] = []

    def exists(path: str) -> bool:
        asked.append(path)
        return False if path == "/dev/kvm" else real_exists(path)

    monkeypatch.setattr(os.path, "exists", exists)
    monkeypatch.setattr(subprocess, "run", pytest.fail)
    assert probe_kvm(QEMU, tmp_path / "bzImage") == (False, "/dev/kvm does not exist")
    assert asked == ["/dev/kvm"]


def test_probe_with_an_inaccessible_dev_kvm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os.path, "exists", lambda path: path == "/dev/kvm")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setattr(subprocess, "run", pytest.fail)
    assert probe_kvm(QEMU, tmp_path / "bzImage") == (
        False,
        "/dev/kvm is not readable and writable by this user",
    )


@pytest.fixture
def usable_kvm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pretend /dev/kvm is there and busybox is a (fake) static binary."""
    real_exists, real_access = os.path.exists, os.access
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/dev/kvm" or real_exists(p))
    monkeypatch.setattr(os, "access", lambda p, m: p == "/dev/kvm" or real_access(p, m))
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake static busybox")
    monkeypatch.setattr(accel, "find_busybox", lambda: busybox)
    return tmp_path


def fake_qemu(directory: Path, body: str) -> str:
    """A shell script standing in for QEMU; it records its argv and the initrd."""
    path = directory / "fake-qemu"
    path.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{directory}/argv"\n'
        "while [ $# -gt 0 ]; do\n"
        '    case "$1" in\n'
        '        -serial) console="${2#file:}" ;;\n'
        f'        -initrd) cp "$2" "{directory}/initrd" ;;\n'
        "    esac\n"
        "    shift\n"
        "done\n" + body
    )
    path.chmod(0o755)
    return str(path)


def test_probe_with_a_missing_qemu(usable_kvm: Path) -> None:
    assert probe_kvm("/nonexistent/qemu", usable_kvm / "bzImage") == (
        False,
        "/nonexistent/qemu is not installed",
    )


def test_probe_succeeds_when_the_guest_prints_the_marker(usable_kvm: Path) -> None:
    qemu = fake_qemu(usable_kvm, 'echo "booting"; echo tcmu-harness-kvm-probe-ok > "$console"\n')
    kernel = usable_kvm / "bzImage"
    assert probe_kvm(qemu, kernel) == (True, "a KVM probe guest booted")
    argv = (usable_kvm / "argv").read_text().splitlines()
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1] == "host"
    assert argv[argv.index("-kernel") + 1] == str(kernel)
    assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1 loglevel=1 rdinit=/init"
    assert argv[argv.index("-serial") + 1].startswith("file:")
    assert "-no-reboot" in argv
    initrd = (usable_kvm / "initrd").read_bytes()
    assert initrd == probe_initramfs(usable_kvm / "busybox")


def test_probe_fails_with_the_last_stderr_line(usable_kvm: Path) -> None:
    qemu = fake_qemu(
        usable_kvm,
        ': > "$console"\n'
        'echo "qemu-system-x86_64: warning: x" >&2\n'
        'echo "qemu-system-x86_64: error: failed to set MSR 0x48f" >&2\n'
        "exit 1\n",
    )
    assert probe_kvm(qemu, usable_kvm / "bzImage") == (
        False,
        "the KVM probe guest failed (qemu-system-x86_64: error: failed to set MSR 0x48f)",
    )


def test_probe_when_qemu_exits_before_creating_the_console(usable_kvm: Path) -> None:
    """BUG: QEMU opens the -serial file only after the accelerator is initialised, so
    when KVM initialisation fails ("failed to initialize kvm: ...") there is no console
    log; probe_kvm reads it unconditionally and raises FileNotFoundError, which makes
    choose_accel("auto") crash instead of falling back to TCG."""
    qemu = fake_qemu(
        usable_kvm,
        'echo "qemu-system-x86_64: failed to initialize kvm: Device or resource busy" >&2\n'
        "exit 1\n",
    )
    assert probe_kvm(qemu, usable_kvm / "bzImage") == (
        False,
        "the KVM probe guest failed "
        "(qemu-system-x86_64: failed to initialize kvm: Device or resource busy)",
    )


def test_probe_fails_without_the_marker(usable_kvm: Path) -> None:
    qemu = fake_qemu(usable_kvm, 'echo "Kernel panic" > "$console"\nexit 0\n')
    assert probe_kvm(qemu, usable_kvm / "bzImage") == (
        False,
        "the KVM probe guest failed (exit status 0, marker seen: False)",
    )


def test_probe_times_out(usable_kvm: Path) -> None:
    qemu = fake_qemu(usable_kvm, "exec sleep 30\n")
    assert probe_kvm(qemu, usable_kvm / "bzImage", timeout=0.6) == (
        False,
        "a KVM guest did not boot within 1 s (/dev/kvm hangs)",
    )


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) is not installed")
def test_probe_initramfs_contents(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake")
    archive = probe_initramfs(busybox)
    listing = subprocess.run(
        ["cpio", "-tv", "--numeric-uid-gid"],
        input=archive,
        capture_output=True,
        check=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
    ).stdout.decode()
    assert [(line.split()[0], line.split()[-1]) for line in listing.splitlines()] == [
        ("drwxr-xr-x", "bin"),
        ("drwxr-xr-x", "proc"),
        ("drwxr-xr-x", "dev"),
        ("crw-------", "dev/console"),
        ("-rwxr-xr-x", "bin/busybox"),
        ("-rwxr-xr-x", "init"),
    ]
    init = subprocess.run(
        ["cpio", "-i", "--to-stdout", "init"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert init == (
        "#!/bin/busybox sh\n"
        "/bin/busybox mount -t proc proc /proc\n"
        "/bin/busybox echo tcmu-harness-kvm-probe-ok > /dev/console\n"
        "/bin/busybox echo o > /proc/sysrq-trigger\n"
        "/bin/busybox sleep 60\n"
    )
