"""The thin Dagster layer, one folder per area (runs, risk_hub, governance)."""

import warnings

import dagster as dg

# BackfillPolicy and the pandera Dagster types are beta APIs this project depends on by design
# (single-run backfills, contracts as types); their warnings would bury every log line.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
