"""The code location: merges each area's definitions and picks resources by profile."""

import dagster as dg

defs = dg.Definitions()
