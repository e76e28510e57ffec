"""The conformance suites, installed as tcmu_harness.suites
(`pytest --pyargs tcmu_harness.suites --tcmu-handler SPEC`)."""
