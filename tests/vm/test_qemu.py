"""vm/qemu.py: the QEMU argv and the kernel command line (pure builders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_harness.vm.initramfs import ROOT_TAG, SHARE_TAG
from tcmu_harness.vm.protocol import PORT_NAME
from tcmu_harness.vm.qemu import QemuLaunch, kernel_cmdline, qemu_argv

KERNEL_CMDLINE = (
    "console=ttyS0 loglevel=4 panic=-1 rdinit=/init mitigations=off random.trust_cpu=on "
    "8250.nr_uarts=1"
)


def launch(accel: str) -> QemuLaunch:
    return QemuLaunch(
        binary="/usr/bin/qemu-system-x86_64",
        accel=accel,
        cpus=3,
        memory_mb=1536,
        kernel_image=Path("/cache/kernels/vmlinuz-6.1"),
        initramfs=Path("/cache/initramfs/0123456789abcdef0123.cpio"),
        share_dir=Path("/tmp/vm-1/share"),
        agent_socket=Path("/tmp/vm-1/agent.sock"),
        console_log=Path("/tmp/vm-1/console.log"),
    )


def value_after(argv: list[str], flag: str) -> str:
    """The value of a flag that must appear exactly once."""
    assert argv.count(flag) == 1, flag
    return argv[argv.index(flag) + 1]


def values_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_kernel_cmdline() -> None:
    assert kernel_cmdline() == KERNEL_CMDLINE
    words = kernel_cmdline().split()
    assert "panic=-1" in words
    assert "console=ttyS0" in words
    assert "rdinit=/init" in words


def test_qemu_argv_kvm_in_full() -> None:
    assert qemu_argv(launch("kvm")) == [
        "/usr/bin/qemu-system-x86_64",
        "-name", "tcmu-harness",
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-accel", "kvm",
        "-cpu", "host",
        "-smp", "3",
        "-m", "1536",
        "-kernel", "/cache/kernels/vmlinuz-6.1",
        "-initrd", "/cache/initramfs/0123456789abcdef0123.cpio",
        "-append", KERNEL_CMDLINE,
        "-serial", "file:/tmp/vm-1/console.log",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", "local,id=share,path=/tmp/vm-1/share,security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=share,mount_tag=harness",
        "-device", "virtio-serial-pci",
        "-chardev", "socket,id=agent,path=/tmp/vm-1/agent.sock",
        "-device", "virtserialport,chardev=agent,name=org.tcmu-harness.agent",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("accel", "accel_value", "cpu"),
    [("kvm", "kvm", "host"), ("tcg", "tcg,thread=multi", "max")],
)
def test_each_flag_beside_its_value(accel: str, accel_value: str, cpu: str) -> None:
    argv = qemu_argv(launch(accel))
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert value_after(argv, "-accel") == accel_value
    assert value_after(argv, "-cpu") == cpu
    assert value_after(argv, "-smp") == "3"
    assert value_after(argv, "-m") == "1536"
    assert value_after(argv, "-name") == "tcmu-harness"
    assert value_after(argv, "-display") == "none"
    assert value_after(argv, "-kernel") == "/cache/kernels/vmlinuz-6.1"
    assert value_after(argv, "-initrd") == "/cache/initramfs/0123456789abcdef0123.cpio"
    assert value_after(argv, "-append") == kernel_cmdline()
    assert value_after(argv, "-serial") == "file:/tmp/vm-1/console.log"
    assert value_after(argv, "-chardev") == "socket,id=agent,path=/tmp/vm-1/agent.sock"
    for flag in ("-no-reboot", "-nodefaults", "-no-user-config"):
        assert argv.count(flag) == 1, flag


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_fsdevs_only_the_host_root_is_read_only(accel: str) -> None:
    argv = qemu_argv(launch(accel))
    fsdevs = [
        dict(kv.split("=", 1) for kv in v.split(",")[1:]) for v in values_after(argv, "-fsdev")
    ]
    assert [v.split(",")[0] for v in values_after(argv, "-fsdev")] == ["local", "local"]
    assert fsdevs == [
        {
            "id": "hostroot",
            "path": "/",
            "security_model": "none",
            "readonly": "on",
            "multidevs": "remap",
        },
        {"id": "share", "path": "/tmp/vm-1/share", "security_model": "none", "multidevs": "remap"},
    ]


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_devices_tags_and_the_agent_port(accel: str) -> None:
    argv = qemu_argv(launch(accel))
    assert values_after(argv, "-device") == [
        f"virtio-9p-pci,fsdev=hostroot,mount_tag={ROOT_TAG}",
        f"virtio-9p-pci,fsdev=share,mount_tag={SHARE_TAG}",
        "virtio-serial-pci",
        f"virtserialport,chardev=agent,name={PORT_NAME}",
    ]
    port = values_after(argv, "-device")[-1]
    assert dict(kv.split("=", 1) for kv in port.split(",")[1:])["name"] == PORT_NAME
    chardev_id = value_after(argv, "-chardev").split(",")[1]
    assert chardev_id == "id=agent"


def test_tcg_differs_from_kvm_only_in_accel_and_cpu() -> None:
    kvm, tcg = qemu_argv(launch("kvm")), qemu_argv(launch("tcg"))
    assert len(kvm) == len(tcg)
    assert [(i, a, b) for i, (a, b) in enumerate(zip(kvm, tcg, strict=True)) if a != b] == [
        (kvm.index("-accel") + 1, "kvm", "tcg,thread=multi"),
        (kvm.index("-cpu") + 1, "host", "max"),
    ]


def test_launch_name_is_used() -> None:
    base = launch("tcg")
    named = QemuLaunch(**{**base.__dict__, "name": "vm-7"})
    assert value_after(qemu_argv(named), "-name") == "vm-7"
