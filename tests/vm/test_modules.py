"""module_closure and read_module on synthetic module trees."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from tcmu_harness.vm import modules
from tcmu_harness.vm.kernel import KernelError
from tcmu_harness.vm.modules import (
    ModuleError,
    ModuleFile,
    module_closure,
    module_name,
    read_module,
)

VERSION = "6.1.0-test-amd64"

# Diamond: top -> left, right-mod -> base. depmod lists every transitive dependency and
# modprobe inserts them from the last listed to the first.
DEP = """\
kernel/a/top.ko.xz: kernel/b/left.ko.xz kernel/c/right-mod.ko.xz kernel/d/base.ko.xz
kernel/b/left.ko.xz: kernel/d/base.ko.xz
kernel/c/right-mod.ko.xz: kernel/d/base.ko.xz
kernel/d/base.ko.xz:
kernel/e/solo.ko:
kernel/f/user.ko: kernel/d/base.ko.xz
kernel/g/crc_gen.ko:
kernel/g/crc-fast.ko:
kernel/h/after.ko:
"""
BUILTIN = "kernel/drivers/scsi/sd_mod.ko\nkernel/fs/configfs/configfs.ko\n"


def make_tree(root: Path, dep: str = DEP, builtin: str = BUILTIN, **extra: str) -> Path:
    d = root / "lib" / "modules" / VERSION
    d.mkdir(parents=True)
    (d / "modules.dep").write_text(dep)
    (d / "modules.builtin").write_text(builtin)
    for name, text in extra.items():
        (d / name.replace("_", ".")).write_text(text)
    return d


def names(found: list[ModuleFile]) -> list[str]:
    return [m.name for m in found]


def assert_topological(found: list[ModuleFile], dep: str = DEP) -> None:
    position = {m.name: i for i, m in enumerate(found)}
    for line in dep.splitlines():
        target, _, rest = line.partition(":")
        if module_name(target) in position:
            for d in rest.split():
                assert position[module_name(d)] < position[module_name(target)]


def test_diamond_in_kmod_order(tmp_path: Path) -> None:
    d = make_tree(tmp_path)
    found = module_closure(d, ["top"])
    assert names(found) == ["base", "right_mod", "left", "top"]
    assert_topological(found)
    assert found[0] == ModuleFile("base", d / "kernel/d/base.ko.xz")
    assert all(m.path.is_absolute() for m in found)


def test_dedup_across_requests_and_deps_first(tmp_path: Path) -> None:
    d = make_tree(tmp_path)
    found = module_closure(d, ["left", "top", "base", "user", "left"])
    assert names(found) == ["base", "left", "right_mod", "top", "user"]
    assert_topological(found)


def test_dash_and_underscore_are_the_same(tmp_path: Path) -> None:
    d = make_tree(tmp_path)
    assert names(module_closure(d, ["right_mod"])) == ["base", "right_mod"]
    assert names(module_closure(d, ["right-mod"])) == ["base", "right_mod"]
    assert names(module_closure(d, ["crc-gen", "crc_fast"])) == ["crc_gen", "crc_fast"]


def test_builtin_names_are_skipped(tmp_path: Path) -> None:
    d = make_tree(tmp_path)
    assert module_closure(d, ["sd-mod", "configfs", "solo"]) == [
        ModuleFile("solo", d / "kernel/e/solo.ko")
    ]


def test_unknown_module_is_one_sentence(tmp_path: Path) -> None:
    d = make_tree(tmp_path)
    with pytest.raises(ModuleError) as err:
        module_closure(d, ["solo", "no-such"])
    assert str(err.value) == (
        f"module no_such is not in kernel {VERSION}: it is neither built in nor listed in "
        f"{d / 'modules.dep'}"
    )
    assert isinstance(err.value, KernelError)


def test_a_kernel_without_tcmu_names_the_config_option(tmp_path: Path) -> None:
    """A kernel built without CONFIG_TCM_USER2: the sentence says what to build."""
    d = make_tree(tmp_path)
    with pytest.raises(ModuleError) as err:
        module_closure(d, ["target_core_user"])
    assert str(err.value) == (
        f"module target_core_user is not in kernel {VERSION}: it is neither built in nor "
        f"listed in {d / 'modules.dep'}; build the kernel with CONFIG_TCM_USER2=m (or =y)"
    )


def test_relative_modules_dir_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    found = module_closure(Path("lib/modules") / VERSION, ["solo"])
    assert found[0].path == tmp_path / "lib/modules" / VERSION / "kernel/e/solo.ko"


def test_missing_modules_dep(tmp_path: Path) -> None:
    d = tmp_path / VERSION
    d.mkdir()
    with pytest.raises(ModuleError, match=r"cannot read .*modules\.dep .*run depmod"):
        module_closure(d, ["x"])


def test_hard_cycle_is_an_error(tmp_path: Path) -> None:
    d = make_tree(tmp_path, dep="a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(ModuleError, match="dependency cycle: a -> b -> a"):
        module_closure(d, ["a"])


def test_softdeps_pre_via_alias_and_post(tmp_path: Path) -> None:
    d = make_tree(
        tmp_path,
        modules_softdep=(
            "# comment\n"
            "softdep top pre: crcalg missing-thing post: after\n"
            "softdep base pre: top\n"          # would close a cycle: ignored
            "softdep solo ignored-without-mode\n"
        ),
        modules_alias=(
            "alias crcalg crc-fast\n"
            "alias crcalg crc_gen\n"
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* solo\n"
        ),
    )
    found = module_closure(d, ["top", "solo"])
    assert names(found) == [
        "crc_fast", "crc_gen", "base", "right_mod", "left", "top", "after", "solo",
    ]


def test_module_name() -> None:
    assert module_name("kernel/fs/9p/9p.ko.xz") == "9p"
    assert module_name("kernel/lib/crc-t10dif.ko.zst") == "crc_t10dif"
    assert module_name("kernel/x/y.ko.gz") == "y"
    assert module_name("sd-mod") == "sd_mod"


ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8


def test_read_module_xz_gz_plain(tmp_path: Path) -> None:
    xz = tmp_path / "m.ko.xz"
    xz.write_bytes(lzma.compress(ELF, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))
    gz = tmp_path / "m.ko.gz"
    gz.write_bytes(gzip.compress(ELF))
    plain = tmp_path / "m.ko"
    plain.write_bytes(ELF)
    assert read_module(xz) == ELF
    assert read_module(gz) == ELF
    assert read_module(plain) == ELF


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command not installed")
def test_read_module_zstd(tmp_path: Path) -> None:
    plain = tmp_path / "m.ko"
    plain.write_bytes(ELF)
    subprocess.run(["zstd", "-q", str(plain), "-o", str(tmp_path / "m.ko.zst")], check=True)
    assert read_module(tmp_path / "m.ko.zst") == ELF


def test_read_module_zstd_without_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.ko.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd")
    monkeypatch.setattr(modules.shutil, "which", lambda name: None)
    with pytest.raises(ModuleError, match="zstd command is missing; install it"):
        read_module(path)


def test_read_module_corrupt_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ko.xz"
    bad.write_bytes(b"not xz")
    with pytest.raises(ModuleError, match="is not valid compressed data"):
        read_module(bad)
    with pytest.raises(ModuleError, match="cannot read module"):
        read_module(tmp_path / "absent.ko")
