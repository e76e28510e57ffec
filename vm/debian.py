"""A private, self-contained apt setup for fetching Debian kernel packages.

Nothing here touches the host's apt state. Everything lives under ``<root>`` (normally
``<cache_dir>/apt``):

    apt.conf             -c file: every Dir:: setting below, hooks cleared
    tcmu.sources         our deb822 sources list (Dir::Etc::SourceList)
    sources.list.d/      empty (Dir::Etc::SourceParts)
    preferences          empty (Dir::Etc::Preferences; preferences.d/ is PreferencesParts)
    status               empty dpkg status, so host-installed packages never matter
    state/lists/         Dir::State::Lists
    cache/               Dir::Cache (archives/, pkgcache.bin)
    updated              stamp: time and sources digest of the last successful update

The host's /etc/apt/apt.conf.d is still read (proxies and similar settings keep
working), but its update and dpkg hooks are cleared in our apt.conf.

Mirrors come from the host's own apt configuration: the first Debian entry (a suite
whose codename is a Debian release) in /etc/apt/sources.list, sources.list.d/*.list and
sources.list.d/*.sources. The archive URI can be overridden with the ``mirror``
argument or the environment variable TCMU_HARNESS_DEBIAN_MIRROR; the security archive
(a different path on the same hosts) with TCMU_HARNESS_DEBIAN_SECURITY_MIRROR, else the
host's security entry, else ``<archive>-security`` when the archive path ends in
``/debian``, else it is left out.

Suites: bookworm, bookworm-updates, bookworm-backports, trixie (archive) and
bookworm-security (security), component main, amd64 only, Signed-By the host's
debian-archive-keyring (bookworm's 2023.3+deb12u2 already holds the trixie keys). If
an update fails only because of trixie, trixie is dropped and a message is logged.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MIRROR_ENV = "TCMU_HARNESS_DEBIAN_MIRROR"
SECURITY_MIRROR_ENV = "TCMU_HARNESS_DEBIAN_SECURITY_MIRROR"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCHIVE_SUITES: tuple[str, ...] = ("bookworm", "bookworm-updates", "bookworm-backports", "trixie")
SECURITY_SUITES: tuple[str, ...] = ("bookworm-security",)
DEBIAN_CODENAMES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
     "oldoldstable", "oldstable", "stable", "testing", "unstable"}
)
UPDATE_MAX_AGE = 24 * 3600.0
APT_TIMEOUT = 600.0  # s for one apt-get/apt-cache call (a kernel .deb is ~100 MB)


class AptError(Exception):
    """A private apt operation failed; the message is one sentence for the user."""


@dataclass(frozen=True)
class SourceEntry:
    """One deb/deb-src entry from an apt sources file."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]


@dataclass(frozen=True)
class Mirrors:
    """Where our private sources point."""

    archive: str
    security: str | None


@dataclass(frozen=True)
class Available:
    """One version of a package as apt-cache madison reports it."""

    package: str
    version: str
    suite: str


# --- host configuration -------------------------------------------------------------


def parse_deb822_sources(text: str) -> list[SourceEntry]:
    """Entries of a deb822 .sources file; paragraphs with ``Enabled: no`` are skipped."""
    entries: list[SourceEntry] = []
    for paragraph in _deb822_paragraphs(text):
        if paragraph.get("enabled", "yes").strip().lower() == "no":
            continue
        entry = SourceEntry(
            types=tuple(paragraph.get("types", "").split()),
            uris=tuple(paragraph.get("uris", "").split()),
            suites=tuple(paragraph.get("suites", "").split()),
            components=tuple(paragraph.get("components", "").split()),
        )
        if entry.types and entry.uris and entry.suites:
            entries.append(entry)
    return entries


def _deb822_paragraphs(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key: str | None = None
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif raw[0] in " \t":
            if key is not None:
                fields[key] += "\n" + raw.strip()
        elif ":" in raw:
            name, _, value = raw.partition(":")
            key = name.strip().lower()
            fields[key] = value.strip()
    return


def parse_one_line_sources(text: str) -> list[SourceEntry]:
    """Entries of a one-line sources.list (``deb [options] uri suite component...``)."""
    entries: list[SourceEntry] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line, count=1)
        words = line.split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        entries.append(SourceEntry((words[0],), (words[1],), (words[2],), tuple(words[3:])))
    return entries


def read_host_sources(etc_apt: Path = Path("/etc/apt")) -> list[SourceEntry]:
    """All entries of the host's sources.list and sources.list.d, in apt's reading order."""
    entries: list[SourceEntry] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        entries += parse_one_line_sources(main.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                entries += parse_one_line_sources(path.read_text(errors="replace"))
            elif path.suffix == ".sources":
                entries += parse_deb822_sources(path.read_text(errors="replace"))
    return entries


def _suite_codename(suite: str) -> str:
    return re.split(r"[-/]", suite, maxsplit=1)[0]


def _is_security_suite(suite: str) -> bool:
    return suite.endswith("-security") or suite.endswith("/updates")


def find_mirrors(
    entries: Sequence[SourceEntry],
    *,
    mirror: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Mirrors:
    """The Debian archive and security URIs: override, then host entries, then derived."""
    env = os.environ if env is None else env
    archive = mirror or env.get(MIRROR_ENV) or None
    security = env.get(SECURITY_MIRROR_ENV) or None
    debian = [
        e for e in entries
        if "deb" in e.types and "main" in e.components
        and any(_suite_codename(s) in DEBIAN_CODENAMES for s in e.suites)
    ]
    if archive is None:
        archive = next(
            (e.uris[0] for e in debian if any(not _is_security_suite(s) for s in e.suites)), None
        )
    if security is None:
        security = next(
            (e.uris[0] for e in debian if any(_is_security_suite(s) for s in e.suites)), None
        )
    if archive is None:
        raise AptError(
            "found no Debian archive in the host's apt sources (/etc/apt/sources.list"
            f" and sources.list.d); set {MIRROR_ENV} to the URI of a Debian mirror"
        )
    archive = archive.rstrip("/")
    if security is None and archive.endswith("/debian"):
        security = archive + "-security"
    return Mirrors(archive=archive, security=security.rstrip("/") if security else None)


def render_sources(
    mirrors: Mirrors, *, keyring: Path = KEYRING, archive_suites: Sequence[str] = ARCHIVE_SUITES
) -> str:
    """Our private deb822 sources list."""
    paragraphs = [(mirrors.archive, archive_suites)]
    if mirrors.security:
        paragraphs.append((mirrors.security, SECURITY_SUITES))
    return "\n".join(
        f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\nComponents: main\n"
        f"Architectures: amd64\nSigned-By: {keyring}\n"
        for uri, suites in paragraphs
    )


# --- Debian version ordering -------------------------------------------------------


def _char_order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_fragment(a: str, b: str) -> int:
    """dpkg's verrevcmp on one fragment (upstream version or revision)."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _char_order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _char_order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return -1 if ca < cb else 1
            i += i < len(a) and not a[i].isdigit()
            j += j < len(b) and not b[j].isdigit()
        da = re.match(r"\d*", a[i:])
        db = re.match(r"\d*", b[j:])
        na = da.group() if da else ""
        nb = db.group() if db else ""
        i, j = i + len(na), j + len(nb)
        va, vb = int(na or "0"), int(nb or "0")
        if va != vb:
            return -1 if va < vb else 1
    return 0


def compare_versions(a: str, b: str) -> int:
    """Compare two Debian version strings like ``dpkg --compare-versions``: -1, 0 or 1."""

    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or "0"), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_fragment(ua, ub) or _compare_fragment(ra, rb)


def parse_madison(text: str) -> list[Available]:
    """Lines ``pkg | version | uri suite/component arch Packages`` of apt-cache madison."""
    found: list[Available] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != 3 or not cells[2].endswith("Packages"):
            continue
        where = cells[2].split()
        suite = where[1].split("/", 1)[0] if len(where) > 1 else ""
        found.append(Available(package=cells[0], version=cells[1], suite=suite))
    return found


def deb_file_name(package: str, version: str, arch: str = "amd64") -> str:
    """The file name apt-get download gives a package (epoch colon escaped)."""
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


# --- the private apt ----------------------------------------------------------------

Log = Callable[[str], None]


class PrivateApt:
    """apt-get/apt-cache run against a sources list and state of our own."""

    def __init__(self, root: Path, mirrors: Mirrors, *, log: Log = lambda s: None) -> None:
        self.root = root
        self.mirrors = mirrors
        self.log = log
        self.archive_suites: tuple[str, ...] = ARCHIVE_SUITES
        self._state = root / "state"
        self._cache = root / "cache"
        self._conf = root / "apt.conf"
        self._sources = root / "tcmu.sources"
        self._stamp = root / "updated"

    # setup

    def write_config(self) -> None:
        """(Re)write apt.conf, the sources list and the empty files and directories."""
        for d in (self._state / "lists" / "partial", self._cache / "archives" / "partial",
                  self.root / "sources.list.d", self.root / "preferences.d"):
            d.mkdir(parents=True, exist_ok=True)
        for empty in ("preferences", "status"):
            (self.root / empty).touch()
        _write_if_changed(self._sources, self._render_sources())
        _write_if_changed(self._conf, self.render_conf())

    def render_conf(self) -> str:
        r = self.root
        settings = {
            "Dir::State": self._state,
            "Dir::State::Lists": self._state / "lists",
            "Dir::State::status": r / "status",
            "Dir::Cache": self._cache,
            "Dir::Cache::archives": self._cache / "archives",
            "Dir::Cache::pkgcache": self._cache / "pkgcache.bin",
            "Dir::Cache::srcpkgcache": self._cache / "srcpkgcache.bin",
            "Dir::Etc::SourceList": self._sources,
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "APT::Sandbox::User": "root",
            "Acquire::Languages": "none",
        }
        lines = [f'{key} "{value}";' for key, value in settings.items()]
        lines += [f"#clear {hook};" for hook in (
            "APT::Update::Pre-Invoke", "APT::Update::Post-Invoke",
            "APT::Update::Post-Invoke-Success", "DPkg::Pre-Invoke", "DPkg::Post-Invoke",
        )]
        return "\n".join(lines) + "\n"

    # commands

    def _argv(self, tool: str, *args: str) -> list[str]:
        return [tool, "-c", str(self._conf), *args]

    def _run(self, argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        if shutil.which(argv[0]) is None:
            raise AptError(f"{argv[0]} is not installed; this needs a Debian host with apt")
        try:
            return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                                  timeout=APT_TIMEOUT)
        except subprocess.TimeoutExpired:
            verb = next((a for a in argv[3:] if not a.startswith("-")), "")
            raise AptError(
                f"{argv[0]} {verb} did not finish "
                f"within {APT_TIMEOUT:g} s (apt waits forever on a full disk); check the "
                f"network and the free space under {self.root}"
            ) from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise harness processes sharing this cache (apt's own locks fail at once)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "harness.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _render_sources(self) -> str:
        return render_sources(self.mirrors, archive_suites=self.archive_suites)

    def _sources_digest(self) -> str:
        return hashlib.sha256(self._render_sources().encode()).hexdigest()

    def lists_fresh(self, max_age: float = UPDATE_MAX_AGE) -> bool:
        """True if the last update used the current sources and is younger than max_age."""
        try:
            stamp = self._stamp.read_text().split()
        except OSError:
            return False
        if len(stamp) != 2:
            return False
        try:
            when = float(stamp[0])
        except ValueError:
            return False
        return stamp[1] == self._sources_digest() and time.time() - when < max_age

    def update(self, max_age: float = UPDATE_MAX_AGE) -> None:
        """apt-get update, at most once per max_age (and whenever the sources change)."""
        self.write_config()
        if self.lists_fresh(max_age):
            return
        self.log(f"apt-get update (private lists in {self._state / 'lists'})")
        result = self._run(self._argv("apt-get", "-q", "update"))
        if result.returncode != 0 and "trixie" in self.archive_suites and _trixie_failed(result):
            self.log("the trixie index could not be verified or fetched; using bookworm suites "
                     "(with bookworm-backports) only")
            self.archive_suites = tuple(s for s in self.archive_suites if s != "trixie")
            self.write_config()
            result = self._run(self._argv("apt-get", "-q", "update"))
        if result.returncode != 0 or _update_had_errors(result.stdout + result.stderr):
            raise AptError(
                f"apt-get update of the private Debian lists failed ({_last_error(result)}); "
                f"check the network or set {MIRROR_ENV}"
            )
        self._stamp.write_text(f"{time.time()} {self._sources_digest()}\n")

    def package_names(self, prefix: str) -> list[str]:
        """Names of real packages starting with prefix."""
        result = self._run(self._argv("apt-cache", "pkgnames", prefix))
        if result.returncode != 0:
            raise AptError(f"apt-cache pkgnames failed ({_last_error(result)})")
        return sorted(set(result.stdout.split()))

    def madison(self, packages: Sequence[str]) -> list[Available]:
        """Every available version of the packages, with its suite."""
        if not packages:
            return []
        result = self._run(self._argv("apt-cache", "madison", *packages))
        if result.returncode != 0:
            raise AptError(f"apt-cache madison failed ({_last_error(result)})")
        return parse_madison(result.stdout)

    def depends(self, package: str, version: str) -> list[str]:
        """Package names in the Depends field of package=version (alternatives flattened)."""
        result = self._run(self._argv("apt-cache", "show", f"{package}={version}"))
        if result.returncode != 0:
            raise AptError(f"apt-cache show {package}={version} failed ({_last_error(result)})")
        names: list[str] = []
        for line in result.stdout.splitlines():
            if line.startswith("Depends:"):
                for alt in re.split(r"[,|]", line.partition(":")[2]):
                    name = alt.strip().split(" ", 1)[0].split(":", 1)[0]
                    if name:
                        names.append(name)
                break
        return names

    def download(self, package: str, version: str, dest_dir: Path) -> Path:
        """The .deb for package=version in dest_dir, downloading it if not cached there."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / deb_file_name(package, version)
        if target.is_file():
            return target
        self.write_config()
        self.log(f"apt-get download {package}={version}")
        with tempfile.TemporaryDirectory(prefix=".download-", dir=dest_dir) as tmp:
            result = self._run(self._argv("apt-get", "-q", "download", f"{package}={version}"),
                               cwd=Path(tmp))
            got = Path(tmp) / target.name
            if result.returncode != 0 or not got.is_file():
                raise AptError(
                    f"apt-get download {package}={version} failed ({_last_error(result)}); "
                    "check the network and the mirror"
                )
            os.replace(got, target)
        return target


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _last_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "W:", "Err:"))]
    picked = (errors or lines or [f"exit status {result.returncode}"])[-1]
    return picked[:300]


def _update_had_errors(output: str) -> bool:
    return any(line.startswith(("E:", "Err:")) for line in output.splitlines())


def _trixie_failed(result: subprocess.CompletedProcess[str]) -> bool:
    errors = [ln for ln in (result.stdout + result.stderr).splitlines()
              if ln.startswith(("E:", "Err:"))]
    return bool(errors) and all("trixie" in ln for ln in errors)
