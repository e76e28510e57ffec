"""The private apt setup: host source parsing, mirror choice, generated config, versions."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tcmu_harness.vm import debian
from tcmu_harness.vm.debian import (
    AptError,
    Available,
    Mirrors,
    PrivateApt,
    SourceEntry,
    compare_versions,
    deb_file_name,
    find_mirrors,
    parse_deb822_sources,
    parse_madison,
    parse_one_line_sources,
    read_host_sources,
    render_sources,
)

# Made-up hosts (.invalid never resolves); the shapes are those of real host files.
ARCHIVE = "http://mirror.invalid/debian"
SECURITY = "http://mirror.invalid/debian-security"

DEB822 = f"""\
Types: deb
# a comment line inside a paragraph
URIs: {ARCHIVE}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

THIRD_PARTY_DEB822 = """\
Types: deb
URIs: https://vendor.invalid/node_20.x
Suites: nodistro
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBFake
 -----END PGP PUBLIC KEY BLOCK-----

Enabled: no
Types: deb
URIs: http://other.invalid/debian
Suites: bookworm
Components: main
"""

ONE_LINE = f"""\
# deb http://commented.invalid/debian bookworm main
deb https://vendor.invalid/apt cloud-sdk-bookworm main
deb-src {ARCHIVE} bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/d.gpg] {ARCHIVE}/ bookworm main contrib  # x
deb {SECURITY} bookworm-security main
"""


def test_parse_deb822() -> None:
    entries = parse_deb822_sources(DEB822)
    assert entries == [
        SourceEntry(("deb",), (ARCHIVE,), ("bookworm", "bookworm-updates"), ("main",)),
        SourceEntry(("deb",), (SECURITY,), ("bookworm-security",), ("main",)),
    ]


def test_parse_deb822_multiline_key_and_disabled() -> None:
    entries = parse_deb822_sources(THIRD_PARTY_DEB822)
    assert entries == [
        SourceEntry(("deb",), ("https://vendor.invalid/node_20.x",), ("nodistro",), ("main",))
    ]


def test_parse_one_line() -> None:
    entries = parse_one_line_sources(ONE_LINE)
    assert entries == [
        SourceEntry(("deb",), ("https://vendor.invalid/apt",), ("cloud-sdk-bookworm",),
                    ("main",)),
        SourceEntry(("deb-src",), (ARCHIVE,), ("bookworm",), ("main",)),
        SourceEntry(("deb",), (ARCHIVE + "/",), ("bookworm",), ("main", "contrib")),
        SourceEntry(("deb",), (SECURITY,), ("bookworm-security",), ("main",)),
    ]


@pytest.mark.parametrize("text", [DEB822, ONE_LINE])
def test_find_mirrors_from_host_config(text: str) -> None:
    entries = parse_deb822_sources(text) if text is DEB822 else parse_one_line_sources(text)
    assert find_mirrors(entries, env={}) == Mirrors(ARCHIVE, SECURITY)


def test_find_mirrors_ignores_third_party_entries() -> None:
    entries = parse_deb822_sources(THIRD_PARTY_DEB822) + parse_deb822_sources(DEB822)
    assert find_mirrors(entries, env={}) == Mirrors(ARCHIVE, SECURITY)


def test_find_mirrors_overrides() -> None:
    entries = parse_deb822_sources(DEB822)
    local = "http://local.invalid/debian"
    assert find_mirrors(entries, mirror=local, env={}) == Mirrors(local, SECURITY)
    assert find_mirrors(entries, env={debian.MIRROR_ENV: local}) == Mirrors(local, SECURITY)
    assert find_mirrors(
        entries, env={debian.MIRROR_ENV: local, debian.SECURITY_MIRROR_ENV: local + "-sec/"}
    ) == Mirrors(local, local + "-sec")


def test_find_mirrors_derives_security_or_leaves_it_out() -> None:
    only_archive = [SourceEntry(("deb",), (ARCHIVE,), ("bookworm",), ("main",))]
    assert find_mirrors(only_archive, env={}) == Mirrors(ARCHIVE, SECURITY)
    odd = [SourceEntry(("deb",), ("http://m.invalid/pub/deb",), ("bookworm",), ("main",))]
    assert find_mirrors(odd, env={}) == Mirrors("http://m.invalid/pub/deb", None)


def test_find_mirrors_none_found() -> None:
    entries = parse_deb822_sources(THIRD_PARTY_DEB822)
    with pytest.raises(AptError, match=f"found no Debian archive.*set {debian.MIRROR_ENV}"):
        find_mirrors(entries, env={})


def test_read_host_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(ONE_LINE)
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(DEB822)
    (parts / "vendor.list").write_text("deb http://v.invalid/x stable main\n")
    (parts / "node.sources.disabled-by-admin").write_text(THIRD_PARTY_DEB822)
    entries = read_host_sources(tmp_path)
    assert len(entries) == 4 + 2 + 1
    assert entries[-1].uris == ("http://v.invalid/x",)


def test_render_sources() -> None:
    text = render_sources(Mirrors(ARCHIVE, SECURITY), keyring=Path("/k.gpg"))
    assert text == (
        f"Types: deb\nURIs: {ARCHIVE}\n"
        "Suites: bookworm bookworm-updates bookworm-backports trixie\n"
        "Components: main\nArchitectures: amd64\nSigned-By: /k.gpg\n\n"
        f"Types: deb\nURIs: {SECURITY}\nSuites: bookworm-security\n"
        "Components: main\nArchitectures: amd64\nSigned-By: /k.gpg\n"
    )
    assert "Suites: bookworm\n" in render_sources(
        Mirrors(ARCHIVE, None), archive_suites=["bookworm"]
    )
    assert SECURITY not in render_sources(Mirrors(ARCHIVE, None))


VERSION_PAIRS = [
    ("6.1.192-2", "6.1.192-1", 1),
    ("6.12.117-1", "6.12.117-1~deb12u1", 1),
    ("6.12.95-1~bpo12+1", "6.12.95-1", -1),
    ("6.12.9-1", "6.12.10-1", -1),
    ("1:1.0", "2.0", 1),
    ("1.0~rc1", "1.0", -1),
    ("1.0+b1", "1.0", 1),
    ("1.0a", "1.0+", -1),
    ("1.0", "1.0-0", 0),
    ("2.30-1", "2.30-1", 0),
]


@pytest.mark.parametrize(("a", "b", "expected"), VERSION_PAIRS)
def test_compare_versions(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg not installed")
@pytest.mark.parametrize(("a", "b", "expected"), VERSION_PAIRS)
def test_compare_versions_agrees_with_dpkg(a: str, b: str, expected: int) -> None:
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0
    gt = subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0
    assert (1 if gt else -1 if lt else 0) == expected


def test_parse_madison() -> None:
    text = (
        "linux-image-amd64 | 6.12.117-1 | http://m.invalid/debian trixie/main amd64 Packages\n"
        "linux-image-amd64 | 6.1.192-2 | http://m.invalid/debian-security "
        "bookworm-security/main amd64 Packages\n"
        "linux | 6.1.192-2 | http://m.invalid/debian bookworm/main Sources\n"
    )
    assert parse_madison(text) == [
        Available("linux-image-amd64", "6.12.117-1", "trixie"),
        Available("linux-image-amd64", "6.1.192-2", "bookworm-security"),
    ]


def test_deb_file_name() -> None:
    assert deb_file_name("p", "6.1.192-2") == "p_6.1.192-2_amd64.deb"
    assert deb_file_name("p", "1:2.0") == "p_1%3a2.0_amd64.deb"


def make_apt(tmp_path: Path, messages: list[str] | None = None) -> PrivateApt:
    log = messages.append if messages is not None else (lambda s: None)
    return PrivateApt(tmp_path / "apt", Mirrors(ARCHIVE, SECURITY), log=log)


def test_write_config_is_private(tmp_path: Path) -> None:
    apt = make_apt(tmp_path)
    apt.write_config()
    root = tmp_path / "apt"
    conf = (root / "apt.conf").read_text()
    for line in (
        f'Dir::State::Lists "{root}/state/lists";',
        f'Dir::State::status "{root}/status";',
        f'Dir::Cache "{root}/cache";',
        f'Dir::Etc::SourceList "{root}/tcmu.sources";',
        f'Dir::Etc::SourceParts "{root}/sources.list.d";',
        f'Dir::Etc::Preferences "{root}/preferences";',
        f'Dir::Etc::PreferencesParts "{root}/preferences.d";',
        'APT::Sandbox::User "root";',
        "#clear APT::Update::Post-Invoke-Success;",
    ):
        assert line in conf.splitlines()
    assert "/etc/apt" not in conf
    assert (root / "tcmu.sources").read_text() == render_sources(Mirrors(ARCHIVE, SECURITY))
    assert list((root / "sources.list.d").iterdir()) == []
    assert (root / "status").read_text() == ""
    assert apt._argv("apt-cache", "madison", "x") == [
        "apt-cache", "-c", str(root / "apt.conf"), "madison", "x",
    ]


def fake_run(
    outcomes: list[tuple[int, str]], calls: list[list[str]]
) -> object:
    def run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        code, out = outcomes.pop(0)
        return subprocess.CompletedProcess(argv, code, out, "")
    return run


def test_update_at_most_once_a_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = make_apt(tmp_path)
    calls: list[list[str]] = []
    monkeypatch.setattr(apt, "_run", fake_run([(0, "Hit:1 ..."), (0, "Hit:1 ...")], calls))
    apt.update()
    apt.update()
    assert len(calls) == 1 and calls[0][-1] == "update"
    stamp = tmp_path / "apt" / "updated"
    when, digest = stamp.read_text().split()
    stamp.write_text(f"{float(when) - 25 * 3600} {digest}\n")
    apt.update()
    assert len(calls) == 2


def test_update_again_when_sources_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    apt = make_apt(tmp_path)
    monkeypatch.setattr(apt, "_run", fake_run([(0, "")], calls))
    apt.update()
    other = PrivateApt(tmp_path / "apt", Mirrors("http://b.invalid/debian", None))
    monkeypatch.setattr(other, "_run", fake_run([(0, "")], calls))
    assert not other.lists_fresh()
    other.update()
    assert len(calls) == 2


def test_update_drops_trixie_when_only_trixie_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages: list[str] = []
    apt = make_apt(tmp_path, messages)
    calls: list[list[str]] = []
    trixie_error = (
        "W: GPG error: http://m.invalid/debian trixie InRelease: NO_PUBKEY 0123\n"
        "E: The repository 'http://m.invalid/debian trixie InRelease' is not signed.\n"
    )
    monkeypatch.setattr(apt, "_run", fake_run([(100, trixie_error), (0, "")], calls))
    apt.update()
    assert len(calls) == 2
    assert "trixie" not in (tmp_path / "apt" / "tcmu.sources").read_text()
    assert any("using bookworm suites" in m for m in messages)


def test_update_failure_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = make_apt(tmp_path)
    out = "Err:1 http://m.invalid/debian bookworm InRelease\n  Could not resolve 'm.invalid'\n"
    monkeypatch.setattr(apt, "_run", fake_run([(0, out)], []))
    with pytest.raises(AptError) as err:
        apt.update()
    assert str(err.value) == (
        "apt-get update of the private Debian lists failed (Err:1 http://m.invalid/debian "
        f"bookworm InRelease); check the network or set {debian.MIRROR_ENV}"
    )
    assert not (tmp_path / "apt" / "updated").exists()


def test_download_uses_cache_and_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = make_apt(tmp_path)
    dest = tmp_path / "debs"
    seen: list[Path | None] = []

    def run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        seen.append(cwd)
        assert cwd is not None and cwd.parent == dest
        (cwd / "pkg_1.0-1_amd64.deb").write_bytes(b"deb")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(apt, "_run", run)
    assert apt.download("pkg", "1.0-1", dest) == dest / "pkg_1.0-1_amd64.deb"
    assert apt.download("pkg", "1.0-1", dest) == dest / "pkg_1.0-1_amd64.deb"
    assert len(seen) == 1
    assert sorted(os.listdir(dest)) == ["pkg_1.0-1_amd64.deb"]


def test_lists_fresh_tolerates_garbage(tmp_path: Path) -> None:
    apt = make_apt(tmp_path)
    apt.write_config()
    (tmp_path / "apt" / "updated").write_text("garbage")
    assert not apt.lists_fresh()
    (tmp_path / "apt" / "updated").write_text(f"{time.time()} nope\n")
    assert not apt.lists_fresh()


def test_an_apt_call_that_hangs_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt-get waits forever on a full disk: the call is bounded and says what to check."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(debian, "APT_TIMEOUT", 0.5)
    apt = make_apt(tmp_path)
    with pytest.raises(AptError) as err:
        apt.update()
    assert str(err.value) == (
        "apt-get update did not finish within 0.5 s (apt waits forever on a full disk); check the "
        f"network and the free space under {tmp_path / 'apt'}")
