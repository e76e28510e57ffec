"""The QEMU command line and kernel command line: pure builders, testable without QEMU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tcmu_harness.vm.initramfs import ROOT_TAG, SHARE_TAG
from tcmu_harness.vm.protocol import PORT_NAME


@dataclass(frozen=True)
class QemuLaunch:
    """Everything one QEMU invocation needs, resolved to concrete paths."""

    binary: str
    accel: str  # "kvm" or "tcg"
    cpus: int
    memory_mb: int
    kernel_image: Path
    initramfs: Path
    share_dir: Path  # per-VM writable 9p share (holds stage2.sh)
    agent_socket: Path  # host unix socket; QEMU connects to it as a client
    console_log: Path
    name: str = "tcmu-harness"


def kernel_cmdline() -> str:
    return " ".join(
        (
            "console=ttyS0",  # the console goes to QemuLaunch.console_log
            "loglevel=4",  # warnings and worse on the console; everything in /dev/kmsg
            "panic=-1",  # reboot at once on panic; -no-reboot turns that into QEMU exit
            "rdinit=/init",
            "mitigations=off",  # nothing to protect in a throwaway guest; faster under TCG
            "random.trust_cpu=on",
            "8250.nr_uarts=1",
        )
    )


def _opt(path: Path) -> str:
    """A path inside a QEMU -opt list: commas are doubled, or they split the list."""
    return str(path).replace(",", ",,")


def qemu_argv(launch: QemuLaunch) -> list[str]:
    cpu = "host" if launch.accel == "kvm" else "max"
    accel = "kvm" if launch.accel == "kvm" else "tcg,thread=multi"
    return [
        launch.binary,
        "-name", launch.name,
        "-nodefaults", "-no-user-config",  # only the devices listed here
        "-display", "none",
        "-no-reboot",  # a guest reboot or panic ends QEMU: the host notices at once
        "-accel", accel,
        "-cpu", cpu,
        "-smp", str(launch.cpus),
        "-m", str(launch.memory_mb),
        "-kernel", str(launch.kernel_image),
        "-initrd", str(launch.initramfs),
        "-append", kernel_cmdline(),
        "-serial", f"file:{launch.console_log}",
        # The host's / read-only: the guest runs the host's Python, venv and checkout.
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=hostroot,mount_tag={ROOT_TAG}",
        # Per-VM writable share: the boot script in, files out.
        "-fsdev",
        f"local,id=share,path={_opt(launch.share_dir)},security_model=none,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=share,mount_tag={SHARE_TAG}",
        # The agent's control channel: a named virtio-serial port.
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=agent,path={_opt(launch.agent_socket)}",
        "-device", f"virtserialport,chardev=agent,name={PORT_NAME}",
    ]  # fmt: skip
