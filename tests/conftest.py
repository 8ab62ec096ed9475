"""Fixtures any test may ask for, registered once: the fake providers, the real-component harness
(its session fixtures start a component only when a test asks for it) and the e2e fixtures the
status, leader and CRD tests share."""

pytest_plugins = ["tests.fakes.fixtures", "tests.harness.fixtures", "tests.e2e.status_support", "tests.e2e.crd_support"]
