"""Test helpers that start real services (never mocks) for the test suite."""
