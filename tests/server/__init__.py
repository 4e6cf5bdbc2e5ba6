"""Tests of agentfast.server (a package, so its conftest does not shadow tests/conftest.py)."""
