"""Root conftest. The harness's pytest plugin (fixtures/plugin.py and the plugins it
lists) is loaded by its pytest11 entry point, wherever tcmu-harness is installed; this
file only says what to do when this checkout's Python lacks it."""

import importlib.util

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("tcmu_harness.fixtures.plugin"):
        installed = importlib.util.find_spec("tcmu_harness") is not None
        raise pytest.UsageError(
            "the tcmu-harness pytest plugin is not loaded: "
            + ("it was disabled (-p no:..., or PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 without "
               "-p tcmu_harness.fixtures.plugin)" if installed else
               "this Python does not have tcmu-harness installed; run `bash .ci/setup` and "
               "use .venv/bin/pytest (or pip install -e .)"))
