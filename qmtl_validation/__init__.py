"""qmtl_validation: strategy validation and risk signal hub as a Dagster code location."""

__version__ = "0.1.0"
