"""Which kernel the VM boots: spec parsing, resolution to an image and a modules directory.

Kernel spec syntax (``--kernel`` / the harness option):

``None``, ``""``, ``default``, ``deb:default``
    The current Debian bookworm kernel: the package ``linux-image-amd64`` depends on in
    the newest of bookworm, bookworm-updates, bookworm-security, used in its
    ``linux-image-<abi>-amd64-unsigned`` form (e.g. 6.1.0-56).
``deb:VERSION``
    The newest ``linux-image-<abi>-amd64-unsigned`` whose ABI is VERSION or starts with
    VERSION followed by ``.``, ``-`` or ``+``, over all our suites (bookworm and its
    updates, security and backports, and trixie), newest package version first.
    ``deb:6.12`` gives the newest 6.12 build; ``deb:6.1`` never matches 6.12;
    ``deb:6.1.0-56`` is exact.
``deb:linux-image-...``
    Exactly that package (any flavour, e.g. ``linux-image-6.1.0-56-cloud-amd64-unsigned``).
``BZIMAGE:MODROOT``
    A developer's own build. BZIMAGE is a bzImage file, or a kernel build tree (then its
    ``arch/x86/boot/bzImage``). MODROOT is the INSTALL_MOD_PATH given to ``make
    modules_install`` (it holds ``lib/modules/<version>``) or that
    ``lib/modules/<version>`` directory itself. Paths may not contain ':'.
``PATH`` alone
    - a kernel build tree: the image is ``PATH/arch/x86/boot/bzImage`` and the modules
      are taken from ``$INSTALL_MOD_PATH/lib/modules/<version>`` (the variable ``make
      modules_install`` reads); without it, pass ``PATH:MODROOT``;
    - an unpacked package root or install root holding ``boot/vmlinuz-<v>`` and
      ``lib/modules/<v>``: that pair;
    - a bzImage file: modules from ``../lib/modules/<version>`` beside its directory
      (the layout of an unpacked package, ``ROOT/boot/vmlinuz-<v>``).

The modules directory must be named after the image's version (kmod looks modules up by
``uname -r``); a mismatch is an error. A path kernel's directory is never written to: if
it has no ``modules.dep``, depmod runs on a shadow under ``cache_dir/depmod/`` (symlinks
to the real entries plus depmod's output) and ``Kernel.modules_dir`` is that shadow.

Caching (under ``cache_dir``): the private apt lists are refreshed at most once a day;
each Debian spec's resolution (package and version) is remembered in
``resolved.json`` and reused for a day without any apt call; downloaded .debs stay in
``debs/``; unpacked kernels (with modules.dep) in ``kernels/<package>_<version>/``. If
apt fails (offline) and an older resolution of the same spec is unpacked, that one is
used with a logged warning. Delete ``resolved.json`` to force a fresh look-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tcmu_harness.vm.debian import (
    AptError,
    Available,
    PrivateApt,
    compare_versions,
    find_mirrors,
    read_host_sources,
)

Log = Callable[[str], None]

RESOLUTION_MAX_AGE = 24 * 3600.0
# Free space the cache needs (measured: lists 163 MB; 6.1 .deb 71 MB unpacked to 405 MB).
APT_LISTS_MB = 200
KERNEL_FETCH_MB = 600
DEFAULT_SUITES = frozenset({"bookworm", "bookworm-updates", "bookworm-security"})
_ABI_RE = re.compile(r"^linux-image-(\d+\.\d+[0-9A-Za-z.+~]*(?:-\d+)?)-amd64-unsigned$")
_VERSION_SPEC_RE = re.compile(r"^\d+(\.[0-9A-Za-z+~]+)*(-\d+)?$")
_PACKAGE_SPEC_RE = re.compile(r"^linux-image-[0-9a-z][0-9a-z.+~-]*$")
_BZIMAGE_IN_TREE = Path("arch/x86/boot/bzImage")


class KernelError(Exception):
    """The kernel spec cannot be satisfied; the message is one sentence with the remedy."""


@dataclass(frozen=True)
class KernelSpec:
    """A parsed, not yet resolved, kernel spec."""

    kind: Literal["debian", "path"]
    debian: str | None
    image: Path | None
    modules: Path | None
    text: str


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot: image plus modules directory with modules.dep."""

    version: str
    image: Path
    modules_dir: Path
    source: str


# --- parsing ------------------------------------------------------------------------


def parse_kernel_spec(text: str | None) -> KernelSpec:
    """Parse a kernel spec (see the module docstring); pure, raises KernelError."""
    raw = "" if text is None else text
    spec = raw.strip()
    if spec in ("", "default", "deb:default"):
        return KernelSpec("debian", None, None, None, raw)
    if spec.startswith("deb:"):
        wanted = spec[4:].strip()
        if not wanted:
            raise KernelError(
                f"kernel spec {raw!r} names no Debian kernel; write deb:6.12, deb:6.1.0-56 "
                "or deb:linux-image-<abi>-amd64-unsigned"
            )
        if not (_VERSION_SPEC_RE.match(wanted) or _PACKAGE_SPEC_RE.match(wanted)):
            raise KernelError(
                f"kernel spec {raw!r} is neither a kernel version nor a linux-image package "
                "name; write deb:6.12, deb:6.1.0-56 or deb:linux-image-<abi>-amd64-unsigned"
            )
        return KernelSpec("debian", wanted, None, None, raw)
    image_text, sep, modules_text = spec.partition(":")
    if sep and ":" in modules_text:
        raise KernelError(
            f"kernel spec {raw!r} has more than one ':'; write BZIMAGE:MODROOT "
            "(paths containing ':' are not supported)"
        )
    if sep and not (image_text and modules_text):
        raise KernelError(
            f"kernel spec {raw!r} has an empty side; write BZIMAGE:MODROOT with both paths"
        )
    return KernelSpec(
        "path", None, Path(image_text).expanduser(),
        Path(modules_text).expanduser() if sep else None, raw,
    )


# --- the bzImage header -------------------------------------------------------------


def image_version(image: Path) -> str | None:
    """The kernel version in an x86 bzImage's boot header, or None if there is none."""
    try:
        with image.open("rb") as fh:
            header = fh.read(0x210)
            if len(header) < 0x210 or header[0x202:0x206] != b"HdrS":
                return None
            pointer = int.from_bytes(header[0x20E:0x210], "little")
            if pointer == 0:
                return None
            fh.seek(pointer + 0x200)
            text = fh.read(256).split(b"\0", 1)[0].decode("ascii", errors="replace")
    except OSError:
        return None
    words = text.split()
    return words[0] if words else None


# --- resolution ---------------------------------------------------------------------


def resolve_kernel(spec: KernelSpec, cache_dir: Path, *, log: Log = lambda s: None) -> Kernel:
    """Find or fetch the kernel a spec names; raises KernelError with one sentence."""
    if spec.kind == "path":
        return _resolve_path(spec, cache_dir, log)
    return _resolve_debian(spec, cache_dir, log)


def _find_depmod() -> str | None:
    return shutil.which("depmod") or next(
        (p for p in ("/usr/sbin/depmod", "/sbin/depmod") if os.access(p, os.X_OK)), None
    )


def _run_depmod(base: Path, version: str) -> None:
    depmod = _find_depmod()
    if depmod is None:
        raise KernelError(
            f"modules.dep is missing for {version} and depmod is not installed; "
            "install it with apt-get install kmod"
        )
    result = subprocess.run([depmod, "-b", str(base), version],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KernelError(
            f"depmod -b {base} {version} failed ({result.stderr.strip()[:300]}); "
            "check that the modules directory is complete and writable"
        )


_DEPMOD_INPUTS = frozenset({"modules.order", "modules.builtin", "modules.builtin.modinfo"})


def _tree_signature(modules_dir: Path) -> str:
    """Changes whenever make modules_install rewrites the directory."""
    parts = [str(modules_dir)]
    for p in (modules_dir, modules_dir / "modules.order", modules_dir / "kernel"):
        try:
            st = p.stat()
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{st.st_mtime_ns} {st.st_size}")
    return "\n".join(parts) + "\n"


def _modules_with_dep(modules_dir: Path, cache_dir: Path, log: Log) -> Path:
    """modules_dir itself if it has modules.dep, else a depmod'ed shadow in cache_dir.

    The shadow (cache_dir/depmod/<hash>/lib/modules/<version>) holds symlinks to the
    given directory's entries plus depmod's output, so a tree the user passed in is never
    written to. It is rebuilt when the tree's signature (modules.order, kernel/) changes.
    """
    if (modules_dir / "modules.dep").is_file():
        return modules_dir
    version = modules_dir.name
    digest = hashlib.sha256(str(modules_dir).encode()).hexdigest()[:16]
    home = cache_dir.absolute() / "depmod" / digest
    shadow = home / "lib" / "modules" / version
    signature = _tree_signature(modules_dir)
    stamp = home / "signature"
    if (shadow / "modules.dep").is_file() and stamp.is_file() and stamp.read_text() == signature:
        return shadow
    home.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=home.parent))
    try:
        tmp_dir = tmp / "lib" / "modules" / version
        tmp_dir.mkdir(parents=True)
        for entry in modules_dir.iterdir():
            if not entry.name.startswith("modules.") or entry.name in _DEPMOD_INPUTS:
                (tmp_dir / entry.name).symlink_to(entry)
        log(f"{modules_dir} has no modules.dep; running depmod on a shadow in {home}")
        _run_depmod(tmp, version)
        (tmp / "signature").write_text(signature)
        if home.exists():
            shutil.rmtree(home, ignore_errors=True)
        try:
            tmp.rename(home)
        except OSError:
            if not (shadow / "modules.dep").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return shadow


# path specs


def _looks_like_modules_dir(d: Path) -> bool:
    return any((d / f).exists() for f in ("modules.dep", "modules.order", "modules.builtin"))


def _module_candidates(modroot: Path) -> list[Path]:
    for sub in ("lib/modules", "usr/lib/modules"):
        parent = modroot / sub
        if parent.is_dir():
            found = sorted(d for d in parent.iterdir() if d.is_dir())
            if found:
                return found
    if _looks_like_modules_dir(modroot):
        return [modroot]
    return []


def _pick_modules(modroot: Path, version: str | None, image: Path) -> Path:
    if not modroot.is_dir():
        raise KernelError(
            f"the modules directory {modroot} does not exist; pass the INSTALL_MOD_PATH "
            "of make modules_install or a lib/modules/<version> directory"
        )
    candidates = _module_candidates(modroot)
    if not candidates:
        raise KernelError(
            f"{modroot} holds neither lib/modules/<version> nor modules.order; pass the "
            "INSTALL_MOD_PATH of make modules_install or a lib/modules/<version> directory"
        )
    if version is None:
        if len(candidates) == 1:
            return candidates[0]
        raise KernelError(
            f"{image} has no version in its boot header and {modroot} holds several module "
            f"sets ({', '.join(c.name for c in candidates)}); pass the lib/modules/<version> "
            "directory itself"
        )
    for c in candidates:
        if c.name == version:
            return c
    if len(candidates) == 1:
        raise KernelError(
            f"the modules in {candidates[0]} are for {candidates[0].name} but the image is "
            f"{version}; pass the matching modules directory"
        )
    raise KernelError(
        f"none of the module sets in {modroot} ({', '.join(c.name for c in candidates)}) "
        f"is for the image's {version}; pass the matching modules directory"
    )


def _missing_image(path: Path, text: str) -> KernelError:
    hint = ""
    if _VERSION_SPEC_RE.match(text) or _PACKAGE_SPEC_RE.match(text):
        hint = f" (for a Debian kernel write deb:{text})"
    return KernelError(
        f"the kernel image {path} does not exist{hint}; pass an existing bzImage, "
        "kernel build tree or BZIMAGE:MODROOT"
    )


def _package_root_image(root: Path) -> Path | None:
    boot = root / "boot"
    if not boot.is_dir():
        return None
    images = sorted(p for p in boot.glob("vmlinuz-*")
                    if (root / "lib/modules" / p.name[len("vmlinuz-"):]).is_dir())
    if len(images) > 1:
        raise KernelError(
            f"{root} holds several kernels ({', '.join(p.name for p in images)}); "
            "pass BZIMAGE:MODROOT to choose one"
        )
    return images[0] if images else None


def _resolve_path(spec: KernelSpec, cache_dir: Path, log: Log) -> Kernel:
    assert spec.image is not None
    given = spec.image.absolute()
    if not given.exists():
        raise _missing_image(given, str(spec.image))
    modroot = spec.modules.absolute() if spec.modules is not None else None
    if given.is_dir():
        if (given / _BZIMAGE_IN_TREE).is_file():
            image = given / _BZIMAGE_IN_TREE
            if modroot is None:
                env_root = os.environ.get("INSTALL_MOD_PATH")
                if not env_root:
                    raise KernelError(
                        f"{given} is a kernel build tree but no modules were given; run make "
                        f"modules_install INSTALL_MOD_PATH=DIR and pass {given}:DIR"
                    )
                modroot = Path(env_root).absolute()
                log(f"modules from INSTALL_MOD_PATH={modroot}")
        else:
            root_image = _package_root_image(given)
            if root_image is None:
                raise KernelError(
                    f"{given} is a directory without arch/x86/boot/bzImage or "
                    "boot/vmlinuz-<version>; pass a bzImage file or BZIMAGE:MODROOT"
                )
            image = root_image
            modroot = modroot or given
    else:
        image = given
    version = image_version(image)
    if modroot is None:
        if version is None:
            raise KernelError(
                f"{image} has no version in its boot header, so its modules cannot be found; "
                "pass BZIMAGE:MODROOT"
            )
        sibling = image.parent.parent / "lib" / "modules" / version
        if not sibling.is_dir():
            raise KernelError(
                f"no modules were given for {image} and {sibling} does not exist; pass "
                "BZIMAGE:MODROOT with the INSTALL_MOD_PATH of make modules_install"
            )
        modroot = sibling
    modules_dir = _pick_modules(modroot, version, image)
    if version is None:
        log(f"{image} has no boot-header version; trusting the modules' {modules_dir.name}")
    return Kernel(version=modules_dir.name, image=image,
                  modules_dir=_modules_with_dep(modules_dir, cache_dir, log),
                  source=f"path {image}")


# Debian specs


@dataclass(frozen=True)
class _Choice:
    package: str
    version: str


class AptQueries(Protocol):
    """The queries resolution needs (PrivateApt provides them; tests fake them)."""

    def package_names(self, prefix: str) -> list[str]: ...
    def madison(self, packages: Sequence[str]) -> list[Available]: ...
    def depends(self, package: str, version: str) -> list[str]: ...


def _newest(found: list[Available]) -> Available | None:
    best: Available | None = None
    for a in found:
        if best is None or compare_versions(a.version, best.version) > 0:
            best = a
    return best


def abi_of(package: str) -> str | None:
    """The ABI part of linux-image-<abi>-amd64-unsigned (generic flavour only)."""
    m = _ABI_RE.match(package)
    return m.group(1) if m else None


def abi_matches(abi: str, wanted: str) -> bool:
    """deb:VERSION matching: equal, or a prefix followed by '.', '-' or '+'."""
    return abi == wanted or (abi.startswith(wanted) and abi[len(wanted)] in ".-+")


def _sort_abis(abis: set[str]) -> list[str]:
    def key(abi: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", abi)]
    return sorted(abis, key=key)


def choose_default(apt: AptQueries) -> _Choice:
    """The unsigned image the bookworm linux-image-amd64 metapackage points at."""
    meta = _newest([a for a in apt.madison(["linux-image-amd64"]) if a.suite in DEFAULT_SUITES])
    if meta is None:
        raise KernelError(
            "the private apt lists have no bookworm linux-image-amd64; check the mirror "
            "(TCMU_HARNESS_DEBIAN_MIRROR)"
        )
    targets = [d for d in apt.depends(meta.package, meta.version)
               if d.startswith("linux-image-") and d != "linux-image-amd64"]
    if not targets:
        raise KernelError(
            f"linux-image-amd64 {meta.version} depends on no linux-image package; "
            "pass deb:<version> explicitly"
        )
    unsigned = targets[0] if targets[0].endswith("-unsigned") else targets[0] + "-unsigned"
    return _choose_package(apt, unsigned)


def _choose_package(apt: AptQueries, package: str) -> _Choice:
    best = _newest(apt.madison([package]))
    if best is None:
        available = _available_abis(apt)
        raise KernelError(
            f"no Debian kernel package is named {package}; available: "
            f"{', '.join(_sort_abis(available)) or 'none'}"
        )
    return _Choice(best.package, best.version)


def _available_abis(apt: AptQueries) -> set[str]:
    return {abi for n in apt.package_names("linux-image-") if (abi := abi_of(n))}


def choose_version(apt: AptQueries, wanted: str) -> _Choice:
    """The newest generic unsigned image whose ABI matches wanted."""
    names = apt.package_names("linux-image-")
    abis = {n: abi for n in names if (abi := abi_of(n))}
    matching = [n for n, abi in abis.items() if abi_matches(abi, wanted)]
    best = _newest(apt.madison(matching))
    if best is None:
        raise KernelError(
            f"no Debian kernel package matches {wanted}; available: "
            f"{', '.join(_sort_abis(set(abis.values()))) or 'none'}"
        )
    return _Choice(best.package, best.version)


class _Resolutions:
    """resolved.json: spec key -> {package, version, at}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> tuple[_Choice, float] | None:
        entry = self._load().get(key)
        if not isinstance(entry, dict):
            return None
        package, version, at = entry.get("package"), entry.get("version"), entry.get("at")
        if isinstance(package, str) and isinstance(version, str) and isinstance(at, int | float):
            return _Choice(package, version), float(at)
        return None

    def put(self, key: str, choice: _Choice) -> None:
        data = self._load()
        data[key] = {"package": choice.package, "version": choice.version, "at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def _tree_dir(cache_dir: Path, choice: _Choice) -> Path:
    return cache_dir / "kernels" / f"{choice.package}_{choice.version.replace(':', '%3a')}"


def _modules_dirs(root: Path) -> list[Path]:
    """lib/modules/<v> and usr/lib/modules/<v> directories of a package root."""
    found: dict[Path, Path] = {}
    for parent in (root / "usr/lib/modules", root / "lib/modules"):
        if parent.is_dir():
            for d in sorted(parent.iterdir()):
                if d.is_dir():
                    found.setdefault(d.resolve(), d)
    return list(found.values())


def kernel_from_tree(root: Path, source: str) -> Kernel:
    """The Kernel of an unpacked package root (boot/vmlinuz-<v> and [usr/]lib/modules/<v>)."""
    dirs = _modules_dirs(root)
    if len(dirs) != 1:
        raise KernelError(
            f"{root} should hold exactly one lib/modules/<version> but has "
            f"{', '.join(d.name for d in dirs) or 'none'}; delete it so it is unpacked again"
        )
    modules_dir = dirs[0]
    version = modules_dir.name
    image = root / "boot" / f"vmlinuz-{version}"
    if not image.is_file():
        raise KernelError(f"{image} is missing; delete {root} so it is unpacked again")
    found = image_version(image)
    if found != version:
        raise KernelError(
            f"the modules in {modules_dir} are for {version} but the image is {found}; "
            "pass the matching modules directory"
        )
    if not (modules_dir / "modules.dep").is_file():
        raise KernelError(f"{modules_dir} has no modules.dep; delete {root} so it is unpacked "
                          "again")
    return Kernel(version=version, image=image, modules_dir=modules_dir, source=source)


def _unpack(deb: Path, dest: Path, log: Log) -> None:
    """dpkg-deb -x into a temporary sibling, depmod it, then rename it to dest."""
    if shutil.which("dpkg-deb") is None:
        raise KernelError("dpkg-deb is not installed; install it with apt-get install dpkg")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        log(f"unpacking {deb.name}")
        result = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            deb.unlink(missing_ok=True)
            raise KernelError(
                f"dpkg-deb could not unpack {deb} ({result.stderr.strip()[:200]}); "
                "it was deleted, run again to download it anew"
            )
        for modules_dir in _modules_dirs(tmp):
            if not (modules_dir / "modules.dep").is_file():
                log(f"depmod {modules_dir.name}")
                _run_depmod(modules_dir.parent.parent.parent, modules_dir.name)
        kernel_from_tree(tmp, str(deb))  # refuse to install a tree that would not resolve
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _resolve_debian(spec: KernelSpec, cache_dir: Path, log: Log) -> Kernel:
    cache_dir = cache_dir.absolute()
    key = spec.debian or "default"
    resolutions = _Resolutions(cache_dir / "resolved.json")
    known = resolutions.get(key)
    if known is not None:
        choice, at = known
        tree = _tree_dir(cache_dir, choice)
        if time.time() - at < RESOLUTION_MAX_AGE and tree.is_dir():
            return kernel_from_tree(tree, _source(choice))
    try:
        _require_space(cache_dir, APT_LISTS_MB, "refreshing the private Debian package lists")
        apt = PrivateApt(cache_dir / "apt", find_mirrors(read_host_sources()), log=log)
        with apt.locked():
            apt.update()
            if spec.debian is None:
                choice = choose_default(apt)
            elif spec.debian.startswith("linux-image-"):
                choice = _choose_package(apt, spec.debian)
            else:
                choice = choose_version(apt, spec.debian)
            tree = _tree_dir(cache_dir, choice)
            if not tree.is_dir():
                _require_space(cache_dir, KERNEL_FETCH_MB, f"fetching {choice.package}")
                deb = apt.download(choice.package, choice.version, cache_dir / "debs")
                _unpack(deb, tree, log)
    except AptError as e:
        if known is not None and _tree_dir(cache_dir, known[0]).is_dir():
            log(f"warning: {e}; using the earlier resolution {_source(known[0])}")
            return kernel_from_tree(_tree_dir(cache_dir, known[0]), _source(known[0]))
        raise KernelError(str(e)) from e
    kernel = kernel_from_tree(tree, _source(choice))
    resolutions.put(key, choice)
    log(f"kernel {key}: {kernel.source}")
    return kernel


def _require_space(cache_dir: Path, megabytes: int, what: str) -> None:
    """Refuse in one sentence rather than let apt or dpkg-deb fail (or hang) on a full disk."""
    existing = next(p for p in (cache_dir, *cache_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free >> 20
    if free < megabytes:
        raise KernelError(
            f"the cache dir {cache_dir} has {free} MB free and {what} needs about "
            f"{megabytes} MB; free some space or point --cache-dir (TCMU_HARNESS_CACHE) at a "
            "larger disk"
        )


def _source(choice: _Choice) -> str:
    return f"debian {choice.package} {choice.version}"
