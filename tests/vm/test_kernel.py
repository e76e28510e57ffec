"""Kernel specs: parsing, bzImage versions, path resolution, cached Debian resolution.

The tests marked ``network`` resolve real Debian kernels through a private apt setup
(about 10 s and 70 MB each); deselect them with ``-m "not network"``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tcmu_harness.vm import kernel as kernel_mod
from tcmu_harness.vm.config import default_cache_dir
from tcmu_harness.vm.debian import AptError, Available, find_mirrors, read_host_sources
from tcmu_harness.vm.kernel import (
    Kernel,
    KernelError,
    KernelSpec,
    abi_matches,
    choose_default,
    choose_version,
    image_version,
    parse_kernel_spec,
    resolve_kernel,
)
from tcmu_harness.vm.modules import module_closure, read_module

V = "6.1.0-56-amd64"
OTHER = "5.10.0-30-amd64"


def write_bzimage(path: Path, version: str | None, *, magic: bytes = b"HdrS") -> Path:
    """A file with just enough of the x86 boot header for image_version."""
    data = bytearray(0x800)
    data[0x202:0x206] = magic
    if version is not None:
        pointer = 0x300
        data[0x20E:0x210] = pointer.to_bytes(2, "little")
        text = f"{version} (builder@host) #1 SMP PREEMPT_DYNAMIC Debian\0".encode()
        data[pointer + 0x200 : pointer + 0x200 + len(text)] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def write_modules(parent: Path, version: str, *, dep: bool = True) -> Path:
    d = parent / version
    (d / "kernel").mkdir(parents=True)
    (d / "modules.order").write_text("")
    (d / "modules.builtin").write_text("")
    if dep:
        (d / "modules.dep").write_text("")
    return d


def one_sentence(message: str) -> bool:
    return "\n" not in message and ". " not in message and not message.endswith(".")


# --- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "  ", "default", "deb:default"])
def test_parse_default(text: str | None) -> None:
    assert parse_kernel_spec(text) == KernelSpec("debian", None, None, None, text or "")


@pytest.mark.parametrize(
    "wanted",
    ["6.12", "6.1", "6.1.0-56", "6.12.95+deb12", "linux-image-6.1.0-56-amd64-unsigned",
     "linux-image-6.1.0-56-cloud-amd64-unsigned"],
)
def test_parse_debian(wanted: str) -> None:
    spec = parse_kernel_spec(f"deb:{wanted}")
    assert (spec.kind, spec.debian, spec.image, spec.modules) == ("debian", wanted, None, None)
    assert spec.text == f"deb:{wanted}"


def test_parse_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_kernel_spec("/b/bzImage:/m") == KernelSpec(
        "path", None, Path("/b/bzImage"), Path("/m"), "/b/bzImage:/m"
    )
    assert parse_kernel_spec("linux") == KernelSpec("path", None, Path("linux"), None, "linux")
    monkeypatch.setenv("HOME", "/home/dev")
    spec = parse_kernel_spec("~/linux:~/mods")
    assert (spec.image, spec.modules) == (Path("/home/dev/linux"), Path("/home/dev/mods"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deb:", "kernel spec 'deb:' names no Debian kernel; write deb:6.12, deb:6.1.0-56 "
                 "or deb:linux-image-<abi>-amd64-unsigned"),
        ("deb:foo bar", "kernel spec 'deb:foo bar' is neither a kernel version nor a "
                        "linux-image package name; write deb:6.12, deb:6.1.0-56 or "
                        "deb:linux-image-<abi>-amd64-unsigned"),
        ("deb:../x", "kernel spec 'deb:../x' is neither a kernel version nor a linux-image "
                     "package name; write deb:6.12, deb:6.1.0-56 or "
                     "deb:linux-image-<abi>-amd64-unsigned"),
        ("/a:/b:/c", "kernel spec '/a:/b:/c' has more than one ':'; write BZIMAGE:MODROOT "
                     "(paths containing ':' are not supported)"),
        ("/a:", "kernel spec '/a:' has an empty side; write BZIMAGE:MODROOT with both paths"),
        (":/b", "kernel spec ':/b' has an empty side; write BZIMAGE:MODROOT with both paths"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(KernelError) as err:
        parse_kernel_spec(text)
    assert str(err.value) == message
    assert one_sentence(message)


# --- image_version ------------------------------------------------------------------


def test_image_version(tmp_path: Path) -> None:
    assert image_version(write_bzimage(tmp_path / "bz", V)) == V
    assert image_version(write_bzimage(tmp_path / "nover", None)) is None
    assert image_version(write_bzimage(tmp_path / "elf", V, magic=b"\x7fELF")) is None
    (tmp_path / "short").write_bytes(b"\0" * 0x100)
    assert image_version(tmp_path / "short") is None
    assert image_version(tmp_path / "absent") is None


@pytest.mark.vm  # resolving the default kernel may download it, as booting the VM does
def test_image_version_of_a_real_debian_kernel() -> None:
    """The version in a real bzImage's header is the one its modules directory is named
    after (the default Debian kernel, from the cache)."""
    real = resolve_kernel(parse_kernel_spec(None), default_cache_dir())
    assert image_version(real.image) == real.modules_dir.name


# --- path specs ---------------------------------------------------------------------


def resolve(text: str, cache: Path) -> Kernel:
    return resolve_kernel(parse_kernel_spec(text), cache)


def error_of(text: str, cache: Path) -> str:
    with pytest.raises(KernelError) as err:
        resolve(text, cache)
    message = str(err.value)
    assert one_sentence(message), message
    return message


def test_path_with_install_mod_path(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / "build/arch/x86/boot/bzImage", V)
    mods = write_modules(tmp_path / "inst/lib/modules", V)
    write_modules(tmp_path / "inst/lib/modules", OTHER)
    k = resolve(f"{image}:{tmp_path / 'inst'}", tmp_path / "cache")
    assert k == Kernel(V, image, mods, f"path {image}")


def test_path_with_modules_version_dir_and_build_tree(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / "build/arch/x86/boot/bzImage", V)
    mods = write_modules(tmp_path / "x", V)
    k = resolve(f"{tmp_path / 'build'}:{mods}", tmp_path / "cache")
    assert (k.version, k.image, k.modules_dir) == (V, image, mods)


def test_path_with_merged_usr_modroot(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / "bz", V)
    mods = write_modules(tmp_path / "root/usr/lib/modules", V)
    assert resolve(f"{image}:{tmp_path / 'root'}", tmp_path / "c").modules_dir == mods


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bzimage(tmp_path / "bz", V)
    write_modules(tmp_path / "m/lib/modules", V)
    monkeypatch.chdir(tmp_path)
    k = resolve("bz:m", tmp_path / "c")
    assert k.image == tmp_path / "bz" and k.modules_dir == tmp_path / "m/lib/modules" / V


def test_bare_package_root_and_bare_image(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / f"root/boot/vmlinuz-{V}", V)
    mods = write_modules(tmp_path / "root/lib/modules", V)
    expected = Kernel(V, image, mods, f"path {image}")
    assert resolve(str(tmp_path / "root"), tmp_path / "c") == expected
    assert resolve(str(image), tmp_path / "c") == expected


def test_bare_build_tree_uses_install_mod_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_bzimage(tmp_path / "linux/arch/x86/boot/bzImage", V)
    mods = write_modules(tmp_path / "inst/lib/modules", V)
    tree = tmp_path / "linux"
    monkeypatch.delenv("INSTALL_MOD_PATH", raising=False)
    assert error_of(str(tree), tmp_path / "c") == (
        f"{tree} is a kernel build tree but no modules were given; run make "
        f"modules_install INSTALL_MOD_PATH=DIR and pass {tree}:DIR"
    )
    monkeypatch.setenv("INSTALL_MOD_PATH", str(tmp_path / "inst"))
    assert resolve(str(tree), tmp_path / "c").modules_dir == mods


def test_mismatched_modules(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / "bz", V)
    mods = write_modules(tmp_path / "inst/lib/modules", OTHER)
    expected = (
        f"the modules in {mods} are for {OTHER} but the image is {V}; "
        "pass the matching modules directory"
    )
    assert error_of(f"{image}:{tmp_path / 'inst'}", tmp_path / "c") == expected
    assert error_of(f"{image}:{mods}", tmp_path / "c") == expected


def test_no_matching_module_set_among_several(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / "bz", V)
    write_modules(tmp_path / "inst/lib/modules", OTHER)
    write_modules(tmp_path / "inst/lib/modules", "6.99.0")
    assert error_of(f"{image}:{tmp_path / 'inst'}", tmp_path / "c") == (
        f"none of the module sets in {tmp_path / 'inst'} (5.10.0-30-amd64, 6.99.0) is for "
        f"the image's {V}; pass the matching modules directory"
    )


def test_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = write_bzimage(tmp_path / "bz", V)
    assert error_of(f"{tmp_path / 'nope'}:{tmp_path}", tmp_path / "c") == (
        f"the kernel image {tmp_path / 'nope'} does not exist; pass an existing bzImage, "
        "kernel build tree or BZIMAGE:MODROOT"
    )
    monkeypatch.chdir(tmp_path)
    assert error_of("6.12", tmp_path / "c") == (
        f"the kernel image {tmp_path / '6.12'} does not exist (for a Debian kernel write "
        "deb:6.12); pass an existing bzImage, kernel build tree or BZIMAGE:MODROOT"
    )
    assert error_of(f"{image}:{tmp_path / 'nomods'}", tmp_path / "c") == (
        f"the modules directory {tmp_path / 'nomods'} does not exist; pass the "
        "INSTALL_MOD_PATH of make modules_install or a lib/modules/<version> directory"
    )
    (tmp_path / "empty").mkdir()
    assert error_of(f"{image}:{tmp_path / 'empty'}", tmp_path / "c") == (
        f"{tmp_path / 'empty'} holds neither lib/modules/<version> nor modules.order; pass "
        "the INSTALL_MOD_PATH of make modules_install or a lib/modules/<version> directory"
    )
    assert error_of(str(image), tmp_path / "c") == (
        f"no modules were given for {image} and {tmp_path.parent / 'lib/modules' / V} does "
        "not exist; pass BZIMAGE:MODROOT with the INSTALL_MOD_PATH of make modules_install"
    )
    assert error_of(str(tmp_path / "empty"), tmp_path / "c") == (
        f"{tmp_path / 'empty'} is a directory without arch/x86/boot/bzImage or "
        "boot/vmlinuz-<version>; pass a bzImage file or BZIMAGE:MODROOT"
    )


def test_image_without_version_trusts_a_single_module_set(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / "vmlinux", None)
    mods = write_modules(tmp_path / "inst/lib/modules", OTHER)
    assert resolve(f"{image}:{tmp_path / 'inst'}", tmp_path / "c").version == OTHER
    write_modules(tmp_path / "inst/lib/modules", V)
    assert "has no version in its boot header" in error_of(
        f"{image}:{tmp_path / 'inst'}", tmp_path / "c"
    )
    assert resolve(f"{image}:{mods}", tmp_path / "c").modules_dir == mods


@pytest.mark.skipif(kernel_mod._find_depmod() is None, reason="depmod (kmod) not installed")
def test_missing_modules_dep_is_built_in_a_shadow(tmp_path: Path) -> None:
    image = write_bzimage(tmp_path / "bz", V)
    mods = write_modules(tmp_path / "inst/lib/modules", V, dep=False)
    before = sorted(p.name for p in mods.iterdir())
    k = resolve(f"{image}:{tmp_path / 'inst'}", tmp_path / "cache")
    assert sorted(p.name for p in mods.iterdir()) == before  # the user's tree is untouched
    assert k.modules_dir.is_relative_to(tmp_path / "cache" / "depmod")
    assert k.modules_dir.name == V
    assert (k.modules_dir / "modules.dep").is_file()
    assert (k.modules_dir / "kernel").resolve() == mods / "kernel"
    assert resolve(f"{image}:{tmp_path / 'inst'}", tmp_path / "cache") == k


def test_missing_modules_dep_without_depmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = write_bzimage(tmp_path / "bz", V)
    write_modules(tmp_path / "inst/lib/modules", V, dep=False)
    monkeypatch.setattr(kernel_mod, "_find_depmod", lambda: None)
    assert error_of(f"{image}:{tmp_path / 'inst'}", tmp_path / "c") == (
        f"modules.dep is missing for {V} and depmod is not installed; "
        "install it with apt-get install kmod"
    )


# --- Debian choice (fake apt) -------------------------------------------------------


class FakeApt:
    """The three queries resolution makes, answered from a fixed table."""

    def __init__(self, available: list[Available], depends: dict[str, list[str]]) -> None:
        self.available = available
        self.deps = depends

    def package_names(self, prefix: str) -> list[str]:
        return sorted({a.package for a in self.available if a.package.startswith(prefix)})

    def madison(self, packages: Sequence[str]) -> list[Available]:
        return [a for a in self.available if a.package in packages]

    def depends(self, package: str, version: str) -> list[str]:
        return self.deps[f"{package}={version}"]


def unsigned(abi: str) -> str:
    return f"linux-image-{abi}-amd64-unsigned"


FAKE = FakeApt(
    [
        Available("linux-image-amd64", "6.1.176-1", "bookworm"),
        Available("linux-image-amd64", "6.1.192-2", "bookworm-security"),
        Available("linux-image-amd64", "6.12.95-1~bpo12+1", "bookworm-backports"),
        Available("linux-image-amd64", "6.12.117-1", "trixie"),
        Available(unsigned("6.1.0-50"), "6.1.176-1", "bookworm"),
        Available(unsigned("6.1.0-56"), "6.1.192-2", "bookworm-security"),
        Available("linux-image-6.1.0-56-cloud-amd64-unsigned", "6.1.192-2", "bookworm-security"),
        Available(unsigned("6.12.95+deb12"), "6.12.95-1~bpo12+1", "bookworm-backports"),
        Available(unsigned("6.12.117+deb12"), "6.12.117-1~deb12u1", "bookworm-security"),
        Available(unsigned("6.12.9+deb13"), "6.12.9-1", "trixie"),
    ],
    {"linux-image-amd64=6.1.192-2": ["linux-image-6.1.0-56-amd64"]},
)


def test_choose_default_follows_the_bookworm_metapackage() -> None:
    choice = choose_default(FAKE)
    assert (choice.package, choice.version) == (unsigned("6.1.0-56"), "6.1.192-2")


@pytest.mark.parametrize(
    ("wanted", "package", "version"),
    [
        ("6.12", unsigned("6.12.117+deb12"), "6.12.117-1~deb12u1"),
        ("6.1", unsigned("6.1.0-56"), "6.1.192-2"),
        ("6.1.0-50", unsigned("6.1.0-50"), "6.1.176-1"),
        ("6.12.95", unsigned("6.12.95+deb12"), "6.12.95-1~bpo12+1"),
    ],
)
def test_choose_version(wanted: str, package: str, version: str) -> None:
    choice = choose_version(FAKE, wanted)
    assert (choice.package, choice.version) == (package, version)


def test_choose_version_unknown() -> None:
    with pytest.raises(KernelError) as err:
        choose_version(FAKE, "6.99")
    assert str(err.value) == (
        "no Debian kernel package matches 6.99; available: 6.1.0-50, 6.1.0-56, "
        "6.12.9+deb13, 6.12.95+deb12, 6.12.117+deb12"
    )


def test_abi_matches() -> None:
    assert abi_matches("6.1.0-56", "6.1")
    assert abi_matches("6.1.0-56", "6.1.0-56")
    assert abi_matches("6.12.95+deb12", "6.12.95")
    assert not abi_matches("6.12.95+deb12", "6.1")
    assert not abi_matches("6.1.0-56", "6.1.0-5")


# --- Debian resolution cache --------------------------------------------------------


def fake_tree(cache: Path, package: str, version: str, uname: str) -> Path:
    root = cache / "kernels" / f"{package}_{version}"
    write_bzimage(root / "boot" / f"vmlinuz-{uname}", uname)
    write_modules(root / "lib/modules", uname)
    return root


def remember(cache: Path, key: str, package: str, version: str, age: float) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    entry = {"package": package, "version": version, "at": time.time() - age}
    (cache / "resolved.json").write_text(json.dumps({key: entry}))


def no_apt(*args: object, **kwargs: object) -> None:
    raise AssertionError("apt must not be used")


def test_recent_resolution_needs_no_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_tree(tmp_path, unsigned("6.1.0-56"), "6.1.192-2", V)
    remember(tmp_path, "default", unsigned("6.1.0-56"), "6.1.192-2", age=3600)
    monkeypatch.setattr(kernel_mod, "PrivateApt", no_apt)
    monkeypatch.setattr(kernel_mod, "read_host_sources", no_apt)
    k = resolve_kernel(parse_kernel_spec(None), tmp_path)
    assert k == Kernel(V, root / "boot" / f"vmlinuz-{V}", root / "lib/modules" / V,
                       f"debian {unsigned('6.1.0-56')} 6.1.192-2")


def test_stale_resolution_is_used_when_apt_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tree(tmp_path, unsigned("6.1.0-56"), "6.1.192-2", V)
    remember(tmp_path, "6.1", unsigned("6.1.0-56"), "6.1.192-2", age=3 * 86400)

    def offline(*args: object, **kwargs: object) -> None:
        raise AptError("apt-get update of the private Debian lists failed (offline)")

    monkeypatch.setattr(kernel_mod, "find_mirrors", offline)
    monkeypatch.setattr(kernel_mod, "read_host_sources", lambda: [])
    messages: list[str] = []
    k = resolve_kernel(parse_kernel_spec("deb:6.1"), tmp_path, log=messages.append)
    assert k.version == V
    assert any(m.startswith("warning: apt-get update") for m in messages)
    with pytest.raises(KernelError, match="failed \\(offline\\)"):
        resolve_kernel(parse_kernel_spec("deb:6.12"), tmp_path)


def test_cached_tree_with_mismatched_image(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "p", "1", V)
    write_bzimage(root / "boot" / f"vmlinuz-{V}", OTHER)
    with pytest.raises(KernelError) as err:
        kernel_mod.kernel_from_tree(root, "x")
    assert str(err.value) == (
        f"the modules in {root / 'lib/modules' / V} are for {V} but the image is {OTHER}; "
        "pass the matching modules directory"
    )


# --- real Debian kernels (network) --------------------------------------------------

HARNESS_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay", "configfs", "uio",
                   "target_core_user", "tcm_loop", "sg", "sd_mod"]


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        find_mirrors(read_host_sources())
    except AptError as e:
        pytest.skip(str(e))
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not installed")
    return tmp_path_factory.mktemp("kcache")


@pytest.mark.network
@pytest.mark.parametrize(("spec", "prefix"), [(None, "6.1.0-"), ("deb:6.12", "6.12.")])
def test_resolve_real_debian_kernel(kernel_cache: Path, spec: str | None, prefix: str) -> None:
    k = resolve_kernel(parse_kernel_spec(spec), kernel_cache)
    assert k.version.startswith(prefix) and k.version.endswith("-amd64")
    assert image_version(k.image) == k.version
    assert (k.modules_dir / "modules.dep").is_file()
    assert k.source.startswith("debian linux-image-")
    found = module_closure(k.modules_dir, HARNESS_MODULES)
    assert {"target_core_user", "tcm_loop", "uio"} <= {m.name for m in found}
    for m in found:
        assert read_module(m.path)[:4] == b"\x7fELF"
    if prefix == "6.12.":
        assert all(m.path.name.endswith(".ko.xz") for m in found)
    started = time.monotonic()
    assert resolve_kernel(parse_kernel_spec(spec), kernel_cache) == k
    assert time.monotonic() - started < 1.0



def test_a_full_cache_disk_is_refused_before_apt_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt hangs or fails obscurely on a full disk: resolution checks the space first."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(kernel_mod.shutil, "disk_usage",
                        lambda path: usage._replace(free=150 << 20))
    monkeypatch.setattr(kernel_mod, "PrivateApt", None)  # never reached
    with pytest.raises(KernelError) as err:
        resolve_kernel(parse_kernel_spec("deb:6.99"), tmp_path / "cache")
    assert str(err.value) == (
        f"the cache dir {tmp_path / 'cache'} has 150 MB free and refreshing the private "
        f"Debian package lists needs about {kernel_mod.APT_LISTS_MB} MB; free some space or "
        "point --cache-dir (TCMU_HARNESS_CACHE) at a larger disk")
