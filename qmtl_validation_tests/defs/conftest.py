"""Fixtures for the Dagster-layer tests: the shared moto S3 server and a fresh bucket."""

from qmtl_validation_tests.s3_server import s3_bucket, s3_server  # noqa: F401
