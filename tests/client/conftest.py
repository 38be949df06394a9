"""Client tests use the shared in-process API server (tests/support/apiserver.py)."""

from tests.support.apiserver import ApiServerHarness, api_server, client

__all__ = ["ApiServerHarness", "api_server", "client"]
