"""Root conftest: loads the harness's pytest plugin (fixtures/plugin.py) for every run."""

pytest_plugins = ["fixtures.plugin", "fixtures.lun", "fixtures.report", "fixtures.allure_detail",
                  "fixtures.kernel_log"]
