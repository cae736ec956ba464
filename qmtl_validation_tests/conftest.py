# One moto S3 server per test session, shared by every test that asks for `s3_server`/`s3_bucket`.
pytest_plugins = ["qmtl_validation_tests.s3_server"]
