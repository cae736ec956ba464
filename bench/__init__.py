"""Benchmarks of qmtl_validation against its performance targets (issue 8, docs/PERFORMANCE.md).

``python -m bench`` (or ``make bench``) runs them all; see ``bench.cli`` for the options. Nothing
here is imported by the package.
"""
