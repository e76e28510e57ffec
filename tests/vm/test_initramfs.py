"""vm/initramfs.py: the newc writer (checked by a reader written here and by cpio(1)),
the generic /init, and the content-addressed initramfs cache."""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tcmu_harness.vm import initramfs
from tcmu_harness.vm.initramfs import (
    BOOT_MODULES,
    HOST_ROOT_MOUNT,
    ROOT_TAG,
    SHARE_MOUNT,
    SHARE_TAG,
    STAGE2,
    CpioEntry,
    InitramfsError,
    build_initramfs,
    cpio_newc,
    init_script,
    initramfs_entries,
)

CPIO = shutil.which("cpio")
needs_cpio = pytest.mark.skipif(CPIO is None, reason="cpio(1) is not installed")

# -- a newc reader -------------------------------------------------------------------------

FIELDS = (
    "ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
    "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check",
)  # fmt: skip


@dataclass
class Record:
    offset: int
    header: dict[str, int]
    name: str
    data: bytes


def read_newc(archive: bytes) -> list[Record]:
    """Every record up to and including TRAILER!!!, checking magic, hex fields, NUL
    padding to 4 bytes after the name and after the data, and nothing after the end."""
    records = []
    pos = 0
    while True:
        assert pos % 4 == 0
        assert archive[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        raw = archive[pos + 6 : pos + 110]
        assert len(raw) == 104
        assert all(c in b"0123456789ABCDEF" for c in raw), raw
        header = {f: int(raw[i * 8 : i * 8 + 8], 16) for i, f in enumerate(FIELDS)}
        name_start = pos + 110
        name_end = name_start + header["namesize"]
        assert archive[name_end - 1] == 0  # the name is NUL-terminated ...
        name = archive[name_start : name_end - 1].decode()
        assert b"\0" not in name.encode()  # ... once
        data_start = name_end + (-name_end % 4)
        assert archive[name_end:data_start] == b"\0" * (data_start - name_end)
        data_end = data_start + header["filesize"]
        data = archive[data_start:data_end]
        assert len(data) == header["filesize"]
        next_pos = data_end + (-data_end % 4)
        assert archive[data_end:next_pos] == b"\0" * (next_pos - data_end)
        records.append(Record(pos, header, name, data))
        pos = next_pos
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return records


def header(
    ino: int,
    mode: int,
    nlink: int,
    filesize: int,
    namesize: int,
    rdev: tuple[int, int] = (0, 0),
) -> dict[str, int]:
    return {
        "ino": ino, "mode": mode, "uid": 0, "gid": 0, "nlink": nlink, "mtime": 0,
        "filesize": filesize, "devmajor": 0, "devminor": 0, "rdevmajor": rdev[0],
        "rdevminor": rdev[1], "namesize": namesize, "check": 0,
    }  # fmt: skip


SAMPLE = [
    CpioEntry("bin", stat.S_IFDIR | 0o755),
    CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
    CpioEntry("a", stat.S_IFREG | 0o644, b"1"),
    CpioEntry("ab", stat.S_IFREG | 0o600, b"12"),
    CpioEntry("abc", stat.S_IFREG | 0o755, b"123"),
    CpioEntry("abcd", stat.S_IFREG | 0o644, b"1234"),
    CpioEntry("empty", stat.S_IFREG | 0o644),
    CpioEntry("lib/modules/x.ko", stat.S_IFREG | 0o644, bytes(range(256)) * 5),
]


def test_cpio_newc_headers_names_data_and_trailer() -> None:
    records = read_newc(cpio_newc(SAMPLE))
    assert [r.name for r in records] == [e.name for e in SAMPLE] + ["TRAILER!!!"]
    for ino, (record, entry) in enumerate(zip(records, SAMPLE, strict=False), start=1):
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        assert record.header == header(
            ino, entry.mode, nlink, len(entry.data), len(entry.name) + 1, entry.rdev
        ), entry.name
        assert record.data == entry.data
    assert records[-1].header == header(len(SAMPLE) + 1, 0, 1, 0, 11)
    assert records[-1].data == b""


def test_cpio_newc_exact_bytes_of_one_record() -> None:
    archive = cpio_newc([CpioEntry("init", stat.S_IFREG | 0o755, b"#!x")])
    assert archive[:120] == (
        b"070701"
        b"00000001" b"000081ED" b"00000000" b"00000000" b"00000001" b"00000000"
        b"00000003" b"00000000" b"00000000" b"00000000" b"00000000" b"00000005"
        b"00000000"
        b"init\0" b"\0"  # 110 + 5 = 115, padded to 116
        b"#!x\0"  # 3 bytes of data, padded to 4
    )  # fmt: skip
    assert archive[120:126] == b"070701"
    assert len(archive) == 120 + 124  # the trailer: 110 + 11 = 121 -> 124


def test_cpio_newc_alignment_for_every_name_and_data_length() -> None:
    entries = [
        CpioEntry("n" * name_len, stat.S_IFREG | 0o644, b"d" * data_len)
        for name_len in range(1, 9)
        for data_len in range(0, 9)
    ]
    records = read_newc(cpio_newc(entries))
    assert [(r.name, r.data) for r in records[:-1]] == [(e.name, e.data) for e in entries]
    assert all(r.offset % 4 == 0 for r in records)


def test_cpio_newc_of_nothing_is_only_the_trailer() -> None:
    records = read_newc(cpio_newc([]))
    assert [(r.name, r.header) for r in records] == [("TRAILER!!!", header(1, 0, 1, 0, 11))]


def test_cpio_newc_is_reproducible() -> None:
    assert cpio_newc(SAMPLE) == cpio_newc(list(SAMPLE))
    assert cpio_newc(iter(SAMPLE)) == cpio_newc(SAMPLE)


def run_cpio(args: list[str], archive: bytes) -> bytes:
    assert CPIO is not None
    result = subprocess.run(
        [CPIO, *args],
        input=archive,
        capture_output=True,
        check=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
    )
    return result.stdout


@needs_cpio
def test_cpio_tool_lists_the_names() -> None:
    assert run_cpio(["-t"], cpio_newc(SAMPLE)).decode().splitlines() == [e.name for e in SAMPLE]


@needs_cpio
def test_cpio_tool_sees_types_modes_sizes_and_the_console_device() -> None:
    lines = run_cpio(["-tv", "--numeric-uid-gid"], cpio_newc(SAMPLE)).decode().splitlines()
    assert [line.split() for line in lines] == [
        ["drwxr-xr-x", "2", "0", "0", "0", "Jan", "1", "1970", "bin"],
        ["crw-------", "1", "0", "0", "5,", "1", "Jan", "1", "1970", "dev/console"],
        ["lrwxrwxrwx", "1", "0", "0", "7", "Jan", "1", "1970", "bin/sh", "->", "busybox"],
        ["-rw-r--r--", "1", "0", "0", "1", "Jan", "1", "1970", "a"],
        ["-rw-------", "1", "0", "0", "2", "Jan", "1", "1970", "ab"],
        ["-rwxr-xr-x", "1", "0", "0", "3", "Jan", "1", "1970", "abc"],
        ["-rw-r--r--", "1", "0", "0", "4", "Jan", "1", "1970", "abcd"],
        ["-rw-r--r--", "1", "0", "0", "0", "Jan", "1", "1970", "empty"],
        ["-rw-r--r--", "1", "0", "0", "1280", "Jan", "1", "1970", "lib/modules/x.ko"],
    ]


@needs_cpio
def test_cpio_tool_extracts_the_data() -> None:
    archive = cpio_newc(SAMPLE)
    assert run_cpio(["-i", "--to-stdout", "abc"], archive) == b"123"
    assert run_cpio(["-i", "--to-stdout", "lib/modules/x.ko"], archive) == bytes(range(256)) * 5


# -- /init -------------------------------------------------------------------------------


def test_init_script_loads_the_modules_in_the_given_order() -> None:
    script = init_script(["lib/modules/b.ko", "lib/modules/a.ko", "lib/modules/c.ko"])
    lines = script.splitlines()
    assert lines[0] == "#!/bin/busybox sh"
    loop = lines.index("for m in /lib/modules/b.ko /lib/modules/a.ko /lib/modules/c.ko; do")
    assert lines[loop + 1 : loop + 3] == ['    insmod "$m" || fail "insmod $m failed"', "done"]
    assert lines.index("mount -t devtmpfs devtmpfs /dev") < loop


def test_init_script_reaches_the_host_root_and_hands_over() -> None:
    lines = init_script(["lib/modules/a.ko"]).splitlines()
    expected_order = [
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev",
        "for m in /lib/modules/a.ko; do",
        "mkdir -p /host /rw /newroot",
        f"mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose {ROOT_TAG} "
        "/host \\",
        f'    || fail "cannot mount the host root (9p tag {ROOT_TAG})"',
        "mount -t tmpfs -o mode=0755 tmpfs /rw",
        "mkdir -p /rw/upper /rw/work",
        "mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work "
        "/newroot \\",
        '    || fail "cannot mount the overlay root"',
        "for d in proc sys dev; do mount --move /$d /newroot/$d; done",
        "mount -t tmpfs -o mode=0755 tmpfs /newroot/run",
        f"mkdir -p /newroot{SHARE_MOUNT} /newroot{HOST_ROOT_MOUNT}",
        f'mount --bind /host /newroot{HOST_ROOT_MOUNT} || fail "cannot bind the host root"',
        f"mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 {SHARE_TAG} "
        f"/newroot{SHARE_MOUNT} \\",
        f'    || fail "cannot mount the per-VM share (9p tag {SHARE_TAG})"',
        f'[ -f /newroot{SHARE_MOUNT}/{STAGE2} ] || fail "{SHARE_MOUNT}/{STAGE2} is missing"',
        f"exec switch_root /newroot /bin/sh {SHARE_MOUNT}/{STAGE2}",
    ]
    positions = [lines.index(line) for line in expected_order]
    assert positions == sorted(positions)
    assert lines[-1] == f"exec switch_root /newroot /bin/sh {SHARE_MOUNT}/{STAGE2}"
    assert (ROOT_TAG, SHARE_TAG, SHARE_MOUNT, STAGE2) == (
        "hostroot",
        "harness",
        "/run/tcmu-harness/share",
        "stage2.sh",
    )


@pytest.mark.parametrize("modules", [[], ["lib/modules/a.ko", "lib/modules/b-c.ko"]])
def test_init_script_is_valid_shell(modules: list[str]) -> None:
    sh = shutil.which("dash") or "/bin/sh"
    result = subprocess.run(
        [sh, "-n"], input=init_script(modules).encode(), capture_output=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, b"")


# -- initramfs_entries / build_initramfs ----------------------------------------------------

STATIC_BUSYBOX = b"\x7fELF\x02\x01\x01 static busybox, no dynamic section"
DYNAMIC_BUSYBOX = b"\x7fELF\x02\x01\x01 /lib64/ld-linux-x86-64.so.2\0GLIBC_2.34\0"

# module -> dependencies as depmod lists them
DEPS = {
    "kernel/drivers/char/virtio_console.ko": [],
    "kernel/net/9p/9pnet.ko": [],
    "kernel/net/9p/9pnet_virtio.ko": ["kernel/net/9p/9pnet.ko"],
    "kernel/fs/netfs/netfs.ko": [],
    "kernel/fs/9p/9p.ko.xz": ["kernel/net/9p/9pnet.ko", "kernel/fs/netfs/netfs.ko"],
    "kernel/fs/overlayfs/overlay.ko": [],
    "kernel/fs/configfs/configfs.ko": [],
    "kernel/drivers/uio/uio.ko": [],
    "kernel/drivers/target/target_core_mod.ko": ["kernel/fs/configfs/configfs.ko"],
    "kernel/drivers/target/target_core_user.ko": [
        "kernel/drivers/target/target_core_mod.ko",
        "kernel/drivers/uio/uio.ko",
    ],
    "kernel/drivers/target/loopback/tcm_loop.ko": ["kernel/drivers/target/target_core_mod.ko"],
    "kernel/drivers/scsi/sg.ko": [],
    "kernel/drivers/unused/unused.ko": [],
}
BUILTIN = ("kernel/drivers/virtio/virtio_pci.ko", "kernel/drivers/scsi/sd_mod.ko")
LOAD_ORDER = [
    "virtio_console", "9pnet", "9pnet_virtio", "netfs", "9p", "overlay", "configfs", "uio",
    "target_core_mod", "target_core_user", "tcm_loop", "sg",
]  # fmt: skip


def module_bytes(name: str) -> bytes:
    return b"\x7fELF fake module " + name.encode()


def make_modules(root: Path) -> Path:
    d = root / "lib" / "modules" / "6.1.0-test"
    for rel in DEPS:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        name = path.name.split(".ko")[0]
        data = module_bytes(name)
        path.write_bytes(lzma.compress(data) if rel.endswith(".xz") else data)
    (d / "modules.dep").write_text(
        "".join(f"{rel}: {' '.join(deps)}\n".replace(": \n", ":\n") for rel, deps in DEPS.items())
    )
    (d / "modules.builtin").write_text("".join(f"{b}\n" for b in BUILTIN))
    return d


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    return make_modules(tmp_path / "kernel")


@pytest.fixture
def busybox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "busybox"
    path.write_bytes(STATIC_BUSYBOX)
    monkeypatch.setattr(initramfs, "find_busybox", lambda: path)
    return path


def test_boot_modules() -> None:
    assert BOOT_MODULES == (
        "virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay", "configfs", "uio",
        "target_core_mod", "target_core_user", "tcm_loop", "sg", "sd_mod",
    )  # fmt: skip


def test_initramfs_entries(modules_dir: Path, busybox: Path) -> None:
    entries = initramfs_entries(modules_dir, busybox)
    module_paths = [f"lib/modules/{m}.ko" for m in LOAD_ORDER]
    assert [(e.name, e.mode, e.rdev) for e in entries] == [
        ("bin", stat.S_IFDIR | 0o755, (0, 0)),
        ("dev", stat.S_IFDIR | 0o755, (0, 0)),
        ("proc", stat.S_IFDIR | 0o755, (0, 0)),
        ("sys", stat.S_IFDIR | 0o755, (0, 0)),
        ("lib", stat.S_IFDIR | 0o755, (0, 0)),
        ("lib/modules", stat.S_IFDIR | 0o755, (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, (5, 1)),
        ("bin/busybox", stat.S_IFREG | 0o755, (0, 0)),
        *[(p, stat.S_IFREG | 0o644, (0, 0)) for p in module_paths],
        ("init", stat.S_IFREG | 0o755, (0, 0)),
    ]
    data = {e.name: e.data for e in entries}
    assert data["bin/busybox"] == STATIC_BUSYBOX
    for name in LOAD_ORDER:  # 9p.ko.xz is stored decompressed
        assert data[f"lib/modules/{name}.ko"] == module_bytes(name)
    assert data["init"] == init_script(module_paths).encode()
    assert all(data[e] == b"" for e in ("bin", "dev", "dev/console"))


@needs_cpio
def test_the_real_initramfs_as_cpio_sees_it(modules_dir: Path, busybox: Path) -> None:
    archive = cpio_newc(initramfs_entries(modules_dir, busybox))
    listing = [line.split() for line in run_cpio(["-tv"], archive).decode().splitlines()]
    console = [line for line in listing if line[-1] == "dev/console"]
    assert len(console) == 1
    assert console[0][0] == "crw-------"
    assert console[0][4:6] == ["5,", "1"]
    assert [line[-1] for line in listing if line[0].startswith("d")] == [
        "bin", "dev", "proc", "sys", "lib", "lib/modules",
    ]  # fmt: skip
    assert run_cpio(["-i", "--to-stdout", "bin/busybox"], archive) == STATIC_BUSYBOX
    assert run_cpio(["-i", "--to-stdout", "lib/modules/9p.ko"], archive) == module_bytes("9p")


def test_a_dynamically_linked_busybox_is_refused(modules_dir: Path, tmp_path: Path) -> None:
    dynamic = tmp_path / "busybox-dyn"
    dynamic.write_bytes(DYNAMIC_BUSYBOX)
    with pytest.raises(InitramfsError) as info:
        initramfs_entries(modules_dir, dynamic)
    assert str(info.value) == (
        f"{dynamic} is dynamically linked; install busybox-static instead of busybox"
    )


def test_build_refuses_a_dynamic_busybox_without_writing(
    modules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dynamic = tmp_path / "busybox-dyn"
    dynamic.write_bytes(DYNAMIC_BUSYBOX)
    monkeypatch.setattr(initramfs, "find_busybox", lambda: dynamic)
    cache = tmp_path / "cache"
    with pytest.raises(InitramfsError):
        build_initramfs(modules_dir, cache)
    assert not cache.exists()


def test_build_initramfs_caches_by_content(
    modules_dir: Path, busybox: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = build_initramfs(modules_dir, cache)
    assert first.parent == cache / "initramfs"
    assert first.suffix == ".cpio"
    assert len(first.stem) == 20
    assert all(c in "0123456789abcdef" for c in first.stem)
    assert first.read_bytes() == cpio_newc(initramfs_entries(modules_dir, busybox))
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    inode = first.stat().st_ino

    again = build_initramfs(modules_dir, cache)
    assert again == first
    assert (again.stat().st_ino, again.stat().st_mtime_ns) == (inode, 1_000_000_000)
    assert sorted(p.name for p in (cache / "initramfs").iterdir()) == [first.name]

    (modules_dir / "kernel/drivers/uio/uio.ko").write_bytes(b"\x7fELF another uio")
    changed = build_initramfs(modules_dir, cache)
    assert changed != first
    assert changed.parent == first.parent
    assert sorted(p.name for p in (cache / "initramfs").iterdir()) == sorted(
        [first.name, changed.name]
    )
    assert first.read_bytes() != changed.read_bytes()


def test_find_busybox_takes_the_first_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "usr-bin-busybox"
    second.write_bytes(STATIC_BUSYBOX)
    (tmp_path / "a-directory").mkdir()
    monkeypatch.setattr(
        initramfs,
        "BUSYBOX_CANDIDATES",
        (str(tmp_path / "missing"), str(tmp_path / "a-directory"), str(second)),
    )
    assert initramfs.find_busybox() == second


def test_find_busybox_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initramfs, "BUSYBOX_CANDIDATES", (str(tmp_path / "missing"),))
    with pytest.raises(InitramfsError) as info:
        initramfs.find_busybox()
    assert str(info.value) == (
        "busybox is not installed; install the busybox-static package "
        "(apt-get install busybox-static)"
    )
