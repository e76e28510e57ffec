"""Fixtures of the kernel suite.

    backstore_attributes  the attrib/ names a user backstore has on this kernel (read
                          once per session from a throwaway LUN): features are detected
                          there, not assumed from the kernel version
    require_attribute     require_attribute("pgr_support") skips, naming the kernel,
                          when the attribute is absent
    helper_lun            factory: helper_lun("SlowDisk", delay_s=6, attributes={...},
                          control={...}, name=...) (control: the backstore's control=
                          before enable; name: the backstore's, when a test must know it
                          before the LUN exists)
                          -> a LUN served by a handler of suites/kernel/kernel_handlers.py,
                          whatever --tcmu-handler says (the behaviour under test is the
                          kernel's); deleted after the test, teardown checked
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcmu_harness.lun import Lun, LunManager, LunSpec

HANDLERS = Path(__file__).resolve().parent / "kernel_handlers.py"
_ATTRIBUTES = pytest.StashKey[frozenset[str]]()


def listdir(lun_manager: LunManager, path: str) -> list[str]:
    return lun_manager.vm.run(["ls", path], check=True).text.split()


@pytest.fixture(scope="session")
def backstore_attributes(request: pytest.FixtureRequest, lun_manager: LunManager) -> frozenset[str]:
    cached = request.config.stash.get(_ATTRIBUTES, None)
    if cached is None:
        probe = lun_manager.create(LunSpec(size=1 << 20), name="attribute-probe")
        try:
            cached = frozenset(listdir(lun_manager, f"{probe.backstore_dir}/attrib"))
        finally:
            errors = lun_manager.delete(probe)["errors"]
        assert not errors, f"probe LUN teardown: {errors}"
        request.config.stash[_ATTRIBUTES] = cached
    return cached


@pytest.fixture
def require_attribute(
    backstore_attributes: frozenset[str], lun_manager: LunManager
) -> Callable[[str], None]:
    def require(name: str) -> None:
        if name not in backstore_attributes:
            pytest.skip(f"this kernel ({lun_manager.vm.kernel_version}) has no "
                        f"attrib/{name} on user backstores")
    return require


@pytest.fixture
def helper_lun(lun_manager: LunManager) -> Iterator[Callable[..., Lun]]:
    made: list[Lun] = []

    def make(cls: str, attributes: dict[str, str | int] | None = None,
             control: dict[str, str | int] | None = None, name: str | None = None,
             **options: Any) -> Lun:
        spec = LunSpec(size=16 << 20, handler=f"{HANDLERS}:{cls}",
                       handler_options={k: str(v) for k, v in options.items()},
                       attributes=dict(attributes or {}), control=dict(control or {}))
        lun = lun_manager.create(spec, name=name)
        made.append(lun)
        return lun

    yield make
    errors = [e for lun in made for e in lun_manager.delete(lun)["errors"]]
    leftovers = lun_manager.remove_leftovers()
    if errors or leftovers:
        pytest.fail(f"helper LUN teardown was not clean: {errors} leftovers {leftovers}",
                    pytrace=False)
