"""Module closure of a kernel's lib/modules/<version> directory, and module file reading.

Pure file reading: no modprobe, no running kernel. ``modules.dep`` lines look like
``kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz`` with
paths relative to the modules directory; depmod writes every transitive dependency on
the line, ordered so that modprobe inserts them from the last to the first. The closure
here is a depth-first topological sort over those edges (dependencies visited from the
last listed to the first), so it reproduces modprobe's order on a consistent file and is
still a valid load order if the lists are not.

Soft dependencies (``modules.softdep``: ``softdep crc_t10dif pre: crct10dif``) are
followed like ``modprobe --show-depends`` does: a module's "pre:" modules come before its
own dependencies, its "post:" modules right after it. A softdep name may be an alias
(``crct10dif`` names both crct10dif_pclmul and crct10dif_generic in modules.alias); every
module an exact alias names is taken, in file order. Softdeps that name nothing in this
kernel are ignored, as kmod ignores them; soft edges that would close a cycle are dropped.
Verified: for virtio_pci 9pnet_virtio 9p overlay configfs uio target_core_user tcm_loop
sg sd_mod on Debian 6.1.0-56 and 6.12.117 the result equals kmod's insmod order.

Names are normalised like kmod does: '-' and '_' are the same character.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tcmu_harness.vm.kernel import KernelError

_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


# The kernel option behind each module the harness loads, for "build it with ..." advice.
CONFIG_OPTIONS = {
    "virtio_pci": "CONFIG_VIRTIO_PCI",
    "virtio_console": "CONFIG_VIRTIO_CONSOLE",
    "9pnet_virtio": "CONFIG_NET_9P_VIRTIO",
    "9p": "CONFIG_9P_FS",
    "overlay": "CONFIG_OVERLAY_FS",
    "configfs": "CONFIG_CONFIGFS_FS",
    "uio": "CONFIG_UIO",
    "target_core_mod": "CONFIG_TARGET_CORE",
    "target_core_user": "CONFIG_TCM_USER2",
    "tcm_loop": "CONFIG_LOOPBACK_TARGET",
    "sg": "CONFIG_CHR_DEV_SG",
    "sd_mod": "CONFIG_BLK_DEV_SD",
}


class ModuleError(KernelError):
    """A module is missing or cannot be read; the message is one sentence."""


@dataclass(frozen=True)
class ModuleFile:
    """A loadable module: its normalised name and absolute path (.ko, .ko.xz, ...)."""

    name: str
    path: Path


def normalise(name: str) -> str:
    """kmod's module name form: '-' becomes '_'."""
    return name.replace("-", "_")


def module_name(path: str) -> str:
    """The module name of a path such as kernel/fs/9p/9p.ko.xz."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return normalise(base)


@dataclass(frozen=True)
class _DepTable:
    paths: dict[str, str]          # name -> relative path
    deps: dict[str, list[str]]     # name -> dependency names, as listed


@dataclass(frozen=True)
class _SoftDeps:
    pre: dict[str, list[str]]      # name -> softdep names (modules or aliases)
    post: dict[str, list[str]]


def _read_softdeps(modules_dir: Path) -> _SoftDeps:
    pre: dict[str, list[str]] = {}
    post: dict[str, list[str]] = {}
    try:
        text = (modules_dir / "modules.softdep").read_text()
    except FileNotFoundError:
        return _SoftDeps(pre, post)
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "softdep":
            continue
        name = normalise(words[1])
        target: dict[str, list[str]] | None = None
        for word in words[2:]:
            if word in ("pre:", "post:"):
                target = pre if word == "pre:" else post
            elif target is not None:
                target.setdefault(name, []).append(word)
    return _SoftDeps(pre, post)


def _read_exact_aliases(modules_dir: Path) -> dict[str, list[str]]:
    """alias -> module names, for aliases without wildcards (softdeps use those)."""
    aliases: dict[str, list[str]] = {}
    try:
        text = (modules_dir / "modules.alias").read_text()
    except FileNotFoundError:
        return aliases
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias" and not any(c in words[1] for c in "*?["):
            aliases.setdefault(normalise(words[1]), []).append(normalise(words[2]))
    return aliases


def _read_dep(modules_dir: Path) -> _DepTable:
    dep_file = modules_dir / "modules.dep"
    try:
        text = dep_file.read_text()
    except OSError as e:
        raise ModuleError(
            f"cannot read {dep_file} ({e.strerror}); run depmod for {modules_dir.name}"
        ) from e
    paths: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        target, sep, rest = line.partition(":")
        if not sep:
            continue
        name = module_name(target.strip())
        paths[name] = target.strip()
        deps[name] = [module_name(p) for p in rest.split()]
    return _DepTable(paths, deps)


def _read_builtin(modules_dir: Path) -> set[str]:
    try:
        text = (modules_dir / "modules.builtin").read_text()
    except FileNotFoundError:
        return set()
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def module_closure(modules_dir: Path, names: Sequence[str]) -> list[ModuleFile]:
    """The modules needed to load names, dependencies first, each once.

    Built-in names (modules.builtin) are skipped. A name neither built in nor in
    modules.dep raises ModuleError. Softdeps are included (see the module docstring).
    """
    modules_dir = modules_dir.absolute()
    table = _read_dep(modules_dir)
    builtin = _read_builtin(modules_dir)
    soft = _read_softdeps(modules_dir)
    aliases: dict[str, list[str]] | None = None
    order: list[str] = []
    done: set[str] = set()

    def soft_targets(word: str) -> list[str]:
        nonlocal aliases
        name = module_name(word)
        if name in table.paths:
            return [name]
        if aliases is None:
            aliases = _read_exact_aliases(modules_dir)
        return [m for m in aliases.get(name, []) if m in table.paths]

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise ModuleError(f"modules.dep in {modules_dir} has a dependency cycle: {cycle}")
        if name not in table.paths:
            if name in builtin:
                return
            option = CONFIG_OPTIONS.get(name)
            raise ModuleError(
                f"module {name} is not in kernel {modules_dir.name}: it is neither built in "
                f"nor listed in {modules_dir / 'modules.dep'}"
                + (f"; build the kernel with {option}=m (or =y)" if option else "")
            )
        inner = (*path, name)
        for word in soft.pre.get(name, []):
            for target in soft_targets(word):
                if target not in inner:
                    visit(target, inner)
        for dep in reversed(table.deps[name]):
            visit(dep, inner)
        done.add(name)
        order.append(name)
        for word in soft.post.get(name, []):
            for target in soft_targets(word):
                if target not in inner:
                    visit(target, path)

    for requested in names:
        name = module_name(requested)
        if name in builtin and name not in table.paths:
            continue
        visit(name, ())
    return [ModuleFile(name=n, path=modules_dir / table.paths[n]) for n in order]


def read_module(path: Path) -> bytes:
    """The uncompressed ELF bytes of a module file (.ko, .ko.xz, .ko.gz or .ko.zst)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModuleError(f"cannot read module {path} ({e.strerror})") from e
    try:
        if path.name.endswith(".xz"):
            return lzma.decompress(data)
        if path.name.endswith(".gz"):
            return gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise ModuleError(f"module {path} is not valid compressed data ({e})") from e
    if path.name.endswith(".zst"):
        return _zstd_decompress(path)
    return data


def _zstd_decompress(path: Path) -> bytes:
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ModuleError(
            f"module {path} is zstd-compressed and the zstd command is missing; "
            "install it (apt-get install zstd)"
        )
    result = subprocess.run([zstd, "-dcq", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        err = result.stderr.decode(errors="replace").strip()
        raise ModuleError(f"zstd could not decompress module {path} ({err})")
    return result.stdout
