"""Choose the accelerator: KVM when it really runs a guest, else TCG.

/dev/kvm opening is not enough. On these nested hosts a toy firmware runs under KVM
while a real kernel hangs before its first console line (or QEMU aborts setting an
MSR), so the probe boots the kernel under test with a busybox-only initramfs whose
/init prints a marker and powers off. A working KVM does that in about a second;
anything else within PROBE_TIMEOUT means "no KVM here". The verdict is cached per host
boot (boot_id), QEMU binary and kernel image, so a session pays the probe once.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tcmu_harness.vm.initramfs import CpioEntry, cpio_newc, find_busybox

PROBE_TIMEOUT = 10.0
_MARKER = "tcmu-harness-kvm-probe-ok"


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" or "tcg"
    reason: str  # why, for the session header


def probe_initramfs(busybox: Path) -> bytes:
    init = (
        "#!/bin/busybox sh\n"
        "/bin/busybox mount -t proc proc /proc\n"
        f"/bin/busybox echo {_MARKER} > /dev/console\n"
        "/bin/busybox echo o > /proc/sysrq-trigger\n"
        "/bin/busybox sleep 60\n"
    )
    return cpio_newc(
        [
            CpioEntry("bin", stat.S_IFDIR | 0o755),
            CpioEntry("proc", stat.S_IFDIR | 0o755),
            CpioEntry("dev", stat.S_IFDIR | 0o755),
            CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
            CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
            CpioEntry("init", stat.S_IFREG | 0o755, init.encode()),
        ]
    )


def probe_kvm(
    qemu_binary: str, kernel_image: Path, timeout: float = PROBE_TIMEOUT
) -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    with tempfile.TemporaryDirectory(prefix="tcmu-harness-kvm-") as tmp:
        initrd = Path(tmp, "probe.cpio")
        initrd.write_bytes(probe_initramfs(find_busybox()))
        console = Path(tmp, "console.log")
        argv = [
            qemu_binary, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-accel", "kvm", "-cpu", "host", "-m", "256",
            "-kernel", str(kernel_image), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 loglevel=1 rdinit=/init",
            "-serial", f"file:{console}",
        ]  # fmt: skip
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False, f"a KVM guest did not boot within {timeout:.0f} s (/dev/kvm hangs)"
        except FileNotFoundError:
            return False, f"{qemu_binary} is not installed"
        # QEMU creates the console file only after the accelerator initialised.
        booted = console.exists() and _MARKER in console.read_text(errors="replace")
    if proc.returncode == 0 and booted:
        return True, "a KVM probe guest booted"
    detail = proc.stderr.decode(errors="replace").strip().splitlines()
    why = detail[-1] if detail else f"exit status {proc.returncode}, marker seen: {booted}"
    return False, f"the KVM probe guest failed ({why})"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def choose_accel(
    requested: str, qemu_binary: str, kernel_image: Path, cache_dir: Path
) -> AccelChoice:
    if requested == "tcg":
        return AccelChoice("tcg", "requested")
    if requested == "kvm":
        works, why = probe_kvm(qemu_binary, kernel_image)
        if not works:
            raise RuntimeError(f"the kvm accelerator was requested but {why}; ask for tcg or auto")
        return AccelChoice("kvm", "requested")
    cache = cache_dir / "kvm-probe.json"
    key = {"boot_id": _boot_id(), "qemu": qemu_binary, "kernel": str(kernel_image)}
    try:
        cached = json.loads(cache.read_text())
        if isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items()):
            return AccelChoice("kvm" if cached["works"] else "tcg", f"{cached['why']} (cached)")
    except (OSError, ValueError, KeyError):
        pass
    works, why = probe_kvm(qemu_binary, kernel_image)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({**key, "works": works, "why": why}))
    return AccelChoice("kvm" if works else "tcg", why)
