"""Fixtures of the production-profile tests: the real PostgreSQL (a fresh database per test,
copied from a per-session template); S3 tests use the session's moto server (root conftest)."""

from qmtl_validation_tests.prod.postgres import postgres, postgres_db  # noqa: F401
