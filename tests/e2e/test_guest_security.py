"""What the guest can reach on the host: the host root read-only, the VM's share (its
results directory) writable and nothing else, the agent channel private to this user,
and no network port opened by QEMU."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from tcmu_harness.vm.initramfs import HOST_ROOT_MOUNT, SHARE_MOUNT
from tcmu_harness.vm.machine import VirtualMachine

pytestmark = pytest.mark.vm

# Runs in the guest: try to create `path`, print the errno name (or "written").
_TRY_WRITE = """
import errno, sys
try:
    with open(sys.argv[1], "x") as f:
        f.write("from the guest")
    print("written")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def _guest_write(vm: VirtualMachine, path: str) -> str:
    return vm.run([sys.executable, "-c", _TRY_WRITE, path], check=True).text.strip()


def test_a_guest_write_to_the_host_root_fails_with_erofs(vm: VirtualMachine,
                                                         tmp_path: Path) -> None:
    target = f"{HOST_ROOT_MOUNT}{tmp_path}/from-guest"
    assert _guest_write(vm, target) == "EROFS"
    # Not only the guest's mount flag: remounted read-write, QEMU's export refuses too.
    remount = vm.run(["mount", "-o", "remount,rw", HOST_ROOT_MOUNT])
    assert remount.exit_code == 0, remount.stderr
    try:
        assert _guest_write(vm, target) == "EROFS"
    finally:
        vm.run(["mount", "-o", "remount,ro", HOST_ROOT_MOUNT], check=True)
    assert list(tmp_path.iterdir()) == []


def test_a_guest_write_to_its_own_root_stays_in_the_guest(vm: VirtualMachine,
                                                          tmp_path: Path) -> None:
    # The guest's / is the host root under a tmpfs overlay: the write succeeds there.
    assert _guest_write(vm, f"{tmp_path}/via-overlay") == "written"
    assert list(tmp_path.iterdir()) == []


def test_the_share_is_the_only_writable_host_directory(vm: VirtualMachine) -> None:
    name = f"written-by-guest-{os.getpid()}"
    assert _guest_write(vm, f"{SHARE_MOUNT}/{name}") == "written"
    assert (vm.share_dir / name).read_text() == "from the guest"
    (vm.share_dir / name).unlink()
    mounts = vm.read_file("/proc/self/mounts").decode().splitlines()
    ninep = sorted((fields[1], fields[3].split(",")[0])
                   for fields in (line.split() for line in mounts) if fields[2] == "9p")
    assert ninep == [(HOST_ROOT_MOUNT, "ro"), (SHARE_MOUNT, "rw")]
    # And on QEMU's side: every 9p export but the share's is read-only.
    argv = _qemu_argv(vm)
    exports = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-fsdev"]
    writable = [e for e in exports if "readonly=on" not in e.split(",")]
    assert len(exports) == 2
    assert [e.split("path=")[1].split(",")[0] for e in writable] == [str(vm.share_dir)]


def test_the_agent_socket_is_private(vm: VirtualMachine) -> None:
    private = vm.private_dir
    assert private is not None
    info = private.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.getuid())
    sock = (private / "agent.sock").stat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert (stat.S_IMODE(sock.st_mode), sock.st_uid) == (0o600, os.getuid())
    assert f"path={private / 'agent.sock'}" in " ".join(_qemu_argv(vm))


def test_qemu_listens_on_no_port(vm: VirtualMachine) -> None:
    """No inet socket at all in QEMU (no NIC, no monitor, no VNC: -nodefaults), and no
    listening unix socket (the agent channel is QEMU connecting out to us)."""
    pid = vm.qemu_pid
    assert pid is not None
    inodes = _socket_inodes(pid)
    assert inodes, "QEMU has no socket at all: the agent channel should be one"
    inet = {proto: _table_inodes(pid, proto) & inodes
            for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6")}
    assert inet == {proto: set() for proto in inet}
    listening = []
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Flags 00010000 is __SO_ACCEPTCON: a listening socket (net/unix/af_unix.c).
        if int(fields[6]) in inodes and int(fields[3], 16) & 0x10000:
            listening.append(line)
    assert listening == []


def _qemu_argv(vm: VirtualMachine) -> list[str]:
    return Path(f"/proc/{vm.qemu_pid}/cmdline").read_bytes().decode().split("\0")


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _table_inodes(pid: int, proto: str) -> set[int]:
    """Inodes of the sockets in /proc/PID/net/PROTO (the inode is the 10th column)."""
    try:
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
    except FileNotFoundError:
        return set()
    return {int(line.split()[9]) for line in lines}
