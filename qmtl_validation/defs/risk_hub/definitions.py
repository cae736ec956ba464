import dagster as dg

from qmtl_validation.defs.risk_hub.assets import (
    covariance_matrix,
    extended_validation,
    live_monitoring,
    portfolio_risk,
    realized_returns,
    risk_snapshot,
    risk_snapshot_fallback,
    stress_results,
)

VALIDATE_SNAPSHOTS_JOB = "validate_snapshots"
FALLBACK_JOB = "risk_snapshot_fallback_job"

SNAPSHOT_ASSETS = [
    risk_snapshot,
    covariance_matrix,
    realized_returns,
    stress_results,
    portfolio_risk,
    live_monitoring,
    extended_validation,
]

validate_snapshots_job = dg.define_asset_job(
    VALIDATE_SNAPSHOTS_JOB,
    selection=dg.AssetSelection.assets(*SNAPSHOT_ASSETS),
    description=(
        "Take landed risk snapshots through the risk hub: contract, covariance, realized returns, "
        "stress, portfolio VaR/ES, live monitoring, and the extended validation of the world's runs."
    ),
)

risk_snapshot_fallback_job = dg.define_asset_job(
    FALLBACK_JOB,
    selection=dg.AssetSelection.assets(risk_snapshot_fallback),
    description="Materialise the conservative fallback snapshot of a world in a freshness breach.",
)

defs = dg.Definitions(
    assets=[*SNAPSHOT_ASSETS, risk_snapshot_fallback],
    jobs=[validate_snapshots_job, risk_snapshot_fallback_job],
)
