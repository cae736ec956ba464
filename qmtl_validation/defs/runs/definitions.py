import dagster as dg

from qmtl_validation.defs.runs.assets import (
    evaluation_metrics,
    evaluation_run,
    rule_results,
    run_bundle,
    validation_report,
)
from qmtl_validation.defs.runs.sensors import run_bundle_sensor

validate_runs_job = dg.define_asset_job(
    "validate_runs",
    selection=dg.AssetSelection.groups("runs"),
    description="Validate evaluation runs: read bundles, compute metrics, evaluate rules, record and report.",
)

defs = dg.Definitions(
    assets=[run_bundle, evaluation_metrics, rule_results, evaluation_run, validation_report],
    jobs=[validate_runs_job],
    sensors=[run_bundle_sensor],
)
