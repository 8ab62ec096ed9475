"""End-to-end tests run against real components (tests/harness, registered in tests/conftest.py)."""
