"""Run-scoped assets: from a landed bundle to a validated, evaluated and reported run.

All of them are partitioned by ``evaluation_runs`` and use ``BackfillPolicy.single_run()``: a
run over many partitions processes them in one vectorised pass (one metrics panel, one file per
world and table), so re-validating a world's whole history is one Dagster run. A deployment that
sets ``QMTL_BACKFILL_RUNS_PER_CHUNK=N`` gets ``BackfillPolicy.multi_run(N)`` instead (N runs per
Dagster run, each still one vectorised pass), to spread a backfill over machines.
"""


from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import pandas as pd

from qmtl_validation.core import contracts
from qmtl_validation.core.bundles import BundleError, load_bundle_from_files
from qmtl_validation.core.evaluation import evaluate_run
from qmtl_validation.core.metrics import compute_panel_arrays, flat_columns, metrics_from_arrays
from qmtl_validation.core.reports.files import (
    EQUITY_PNG,
    REPORT_MARKDOWN,
    render_validation_report_files,
    run_report_dir,
)
from qmtl_validation.defs.contract_checks import (
    CONTRACT_CHECK,
    TableOutput,
    contract_check_spec,
    table_type,
    validated_outputs,
)
from qmtl_validation.defs.metadata import markdown_image
from qmtl_validation.defs.resources import LandingZoneResource, WarehouseResource, now_utc
from qmtl_validation.defs.runs.partitions import evaluation_runs_partitions
from qmtl_validation.settings import read_backfill_runs_per_chunk
from qmtl_validation.warehouse.documents import ModelCards, WorldPolicies
from qmtl_validation.warehouse import run_rows
from qmtl_validation.warehouse.intake import REGISTRY_TABLE, read_bundle_files
from qmtl_validation.warehouse.landing import is_transient_io_error

_RUNS_PER_CHUNK = read_backfill_runs_per_chunk()
BACKFILL_POLICY = (
    dg.BackfillPolicy.multi_run(_RUNS_PER_CHUNK) if _RUNS_PER_CHUNK else dg.BackfillPolicy.single_run()
)
GROUP = "runs"
OWNERS = ["team:quant-validation"]
RUN_ASSET = dict(
    partitions_def=evaluation_runs_partitions,
    backfill_policy=BACKFILL_POLICY,
    group_name=GROUP,
    owners=OWNERS,
    io_manager_key="lake_io_manager",
)
POLICY_VERSION_TAG = "qmtl/policy_version"
WORLD_TAG = "qmtl/world"
REASON_TAG = "qmtl/reason"
# Pictures cost ~0.1 s per run; a backfill over thousands of runs writes them for the first few
# and text-only reports for the rest (`qmtl-validation report` renders any run with pictures).
MAX_RUNS_WITH_CHARTS = 20
REPORT_WRITERS = 8


def _out(name: str, model: Any, description: str) -> dg.AssetOut:
    return dg.AssetOut(
        dagster_type=table_type(model),
        description=description,
        metadata={"lake_table": name},
        group_name=GROUP,
        owners=OWNERS,
        kinds={"pandas", "parquet"},
        io_manager_key="lake_io_manager",
    )


@dg.multi_asset(
    outs={
        "run_manifests": _out(
            "run_manifests",
            contracts.RunManifestsTable,
            "Validated run.json of each landed bundle, with where it landed and its content hash.",
        ),
        "strategy_returns": _out(
            "strategy_returns",
            contracts.StrategyReturnsTable,
            "Validated daily simple returns of each run (and benchmark returns when given).",
        ),
        "strategy_trades": _out(
            "strategy_trades",
            contracts.StrategyTradesTable,
            "Validated trades log of each run (absent for runs without one).",
        ),
    },
    partitions_def=evaluation_runs_partitions,
    backfill_policy=BACKFILL_POLICY,
    check_specs=[
        contract_check_spec("run_manifests", contracts.RunManifestsTable),
        contract_check_spec("strategy_returns", contracts.StrategyReturnsTable),
        contract_check_spec("strategy_trades", contracts.StrategyTradesTable),
    ],
    can_subset=False,
)
def run_bundle(context: dg.AssetExecutionContext, landing: LandingZoneResource, warehouse: WarehouseResource):
    """Read each requested run's bundle from the landing zone and validate it.

    Where a bundle landed comes from the landing registry the intake (sensor or demo) writes.
    A bundle that no longer passes its contract fails the step with every problem listed.
    """
    keys = list(context.partition_keys)
    registry = warehouse.latest(REGISTRY_TABLE, keys, key_expression="partition_key")
    registry = registry[registry["kind"] == "run_bundle"]
    prefixes = dict(zip(registry["partition_key"], registry["landing_prefix"], strict=True))
    zone = landing.zone()
    bundles, problems = [], []
    for key in keys:
        if key not in prefixes:
            problems.append(f"{key}: not in the landing registry (was it taken in by the sensor?)")
            continue
        try:
            bundles.append(load_bundle_from_files(read_bundle_files(zone, prefixes[key]), expected_key=key))
        except (BundleError, OSError, ValueError) as error:
            if is_transient_io_error(error):
                raise  # the store is briefly unreachable, not a broken bundle: the run fails and is retried
            problems.append(f"{key}: {error}")
    if problems:
        # The bundles broke their input contract since intake (or were never taken in): fail the
        # three contract checks and the step before anything is written.
        for name in ("run_manifests", "strategy_returns", "strategy_trades"):
            yield dg.AssetCheckResult(
                asset_key=name,
                check_name=CONTRACT_CHECK,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problems": len(problems), "first_problems": dg.MetadataValue.md(
                    "\n".join(f"- {p}" for p in problems[:20]))},
            )
        raise dg.Failure(description=f"{len(problems)} bundle(s) break their contract, nothing written:\n"
                         + "\n".join(problems))
    recorded_at = now_utc()
    stages = Counter(b.manifest.stage for b in bundles)
    yield from validated_outputs(
        TableOutput(
            "run_manifests",
            contracts.RunManifestsTable,
            run_rows.manifest_rows(bundles, prefixes, recorded_at),
            {"runs": len(bundles), "stages": dg.MetadataValue.json(dict(stages))},
        ),
        TableOutput(
            "strategy_returns",
            contracts.StrategyReturnsTable,
            run_rows.returns_rows(bundles, recorded_at),
            {"runs": len(bundles)},
        ),
        TableOutput(
            "strategy_trades",
            contracts.StrategyTradesTable,
            run_rows.trades_rows(bundles, recorded_at),
            {"runs_with_trades": sum(b.trades is not None for b in bundles)},
        ),
        multi=True,
    )


@dg.asset(
    **RUN_ASSET,
    dagster_type=table_type(contracts.EvaluationMetricsTable),
    metadata={"lake_table": "evaluation_metrics"},
    kinds={"numpy", "parquet"},
    check_specs=[contract_check_spec("evaluation_metrics", contracts.EvaluationMetricsTable)],
    # Read below without the identifying strings (a 10,000-run backfill reads 25 million rows,
    # and turning their three id columns into Python strings cost more than the metrics).
    deps=[dg.AssetKey("strategy_returns")],
)
def evaluation_metrics(
    context: dg.AssetExecutionContext,
    run_manifests: pd.DataFrame,
    strategy_trades: pd.DataFrame,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
):
    """Every SPEC §5 metric (v1 core and v1.5) of each run, computed as one vectorised panel."""
    keys = list(context.partition_keys)
    manifests = run_rows.manifests_from_rows(run_manifests)
    returns = warehouse.latest(
        "strategy_returns", keys, columns=("date", "ret", "benchmark_ret"), key_positions=True
    )
    panel, benchmarks = run_rows.returns_panel(returns, keys)
    policies = WorldPolicies(landing.zone())
    arrays = compute_panel_arrays(
        panel,
        run_rows.trades_by_run(strategy_trades),
        periods_per_year={k: policies.periods_per_year(manifests[k].world_id) for k in keys},
        risk_free_rate={k: policies.risk_free_rate(manifests[k].world_id) for k in keys},
        search_intensity={k: manifests[k].search_intensity for k in keys},
        trial_sharpes={k: list(manifests[k].trial_sharpes) for k in keys if manifests[k].trial_sharpes},
        complexity={k: manifests[k].complexity for k in keys},
        extra_metrics={k: manifests[k].extra_metrics for k in keys},
        capital={k: manifests[k].capital for k in keys},
        returns_source={k: manifests[k].returns_source for k in keys},
        benchmark_returns=benchmarks or None,
    )
    nested = [m.to_dict() for m in metrics_from_arrays(arrays).values()]
    frame = run_rows.metrics_rows(keys, flat_columns(arrays), nested, now_utc())
    coverage = frame["diagnostics__validation_health__metric_coverage_ratio"]
    yield from validated_outputs(
        TableOutput(
            "evaluation_metrics",
            contracts.EvaluationMetricsTable,
            frame,
            {
                "runs": len(frame),
                "median_sharpe": dg.MetadataValue.float(float(frame["returns__sharpe"].median()))
                if frame["returns__sharpe"].notna().any()
                else dg.MetadataValue.null(),
                "min_metric_coverage": float(coverage.min()) if len(coverage) else 0.0,
            },
        )
    )


@dg.asset(
    **RUN_ASSET,
    dagster_type=table_type(contracts.RuleResultsTable),
    metadata={"lake_table": "rule_results"},
    kinds={"python", "parquet"},
    check_specs=[contract_check_spec("rule_results", contracts.RuleResultsTable)],
)
def rule_results(
    context: dg.AssetExecutionContext,
    run_manifests: pd.DataFrame,
    evaluation_metrics: pd.DataFrame,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
):
    """The five core rules of each run under its world's policy (current version, or the
    version a policy backfill asks for), with the run's summary status and recommended stage.
    A run whose world has no usable policy gets one ``policy`` row instead (fail, reason code
    ``policy_unavailable``, why) and is recommended ``backtest_only``."""
    manifests = run_rows.manifests_from_rows(run_manifests)
    data_end = dict(zip(run_rows.partition_keys_of(run_manifests), run_manifests["data_end"], strict=True))
    metrics = run_rows.metrics_by_run(evaluation_metrics)
    policies = WorldPolicies(
        landing.zone(),
        pinned_world=context.run.tags.get(WORLD_TAG),
        pinned_version=context.run.tags.get(POLICY_VERSION_TAG),
    )
    previous = run_rows.previous_revisions(warehouse.latest("evaluation_run_history", list(context.partition_keys)))
    now = now_utc()
    evaluations: dict[str, dict[str, Any]] = {}
    for key in context.partition_keys:
        manifest = manifests[key]
        loaded = policies.get(manifest.world_id)
        result = evaluate_run(
            metrics[key],
            loaded.policy if loaded else None,
            manifest.stage,
            now=now,
            submitted_at=manifest.submitted_at,
            data_end=data_end[key],
            policy_version=loaded.version if loaded else None,
            risk_tier=manifest.risk_tier,
            # Without a policy the run still gets a rule row saying why, so it is recorded
            # (fail, backtest_only) instead of vanishing from the rule results.
            missing_policy_reason=None if loaded else policies.errors.get(manifest.world_id, "no policy"),
        )
        evaluations[key] = result.to_dict()
    frame = run_rows.rule_rows(evaluations, {k: previous.get(k, (0, now))[0] + 1 for k in evaluations}, now)
    for world_id, error in policies.errors.items():
        context.log.warning(f"{world_id}: evaluated without a policy (backtest_only): {error}")
    summary = Counter(e["summary"]["status"] for e in evaluations.values())
    stages = Counter(e["summary"]["recommended_stage"] for e in evaluations.values())
    versions = sorted({str(e["validation"]["policy_version"]) for e in evaluations.values()})
    hashes = sorted({str(e["validation"]["ruleset_hash"]) for e in evaluations.values()})
    yield from validated_outputs(
        TableOutput(
            "rule_results",
            contracts.RuleResultsTable,
            frame,
            {
                "status_counts": dg.MetadataValue.json(dict(summary)),
                "recommended_stages": dg.MetadataValue.json(dict(stages)),
                "policy_versions": ", ".join(versions),
                "ruleset_hashes": dg.MetadataValue.md("\n".join(f"- `{h}`" for h in hashes)),
                "failed_rules": dg.MetadataValue.json(
                    dict(Counter(frame.loc[frame["status"] == "fail", "rule"]))
                ),
            },
        )
    )


@dg.asset(
    **RUN_ASSET,
    dagster_type=table_type(contracts.EvaluationRunHistoryTable),
    metadata={"lake_table": "evaluation_run_history"},
    kinds={"python", "parquet"},
    check_specs=[contract_check_spec("evaluation_run", contracts.EvaluationRunHistoryTable)],
)
def evaluation_run(
    context: dg.AssetExecutionContext,
    run_manifests: pd.DataFrame,
    evaluation_metrics: pd.DataFrame,
    rule_results: pd.DataFrame,
    warehouse: WarehouseResource,
):
    """The EvaluationRun record of each run: a new append-only history revision per evaluation
    (status, recommended stage, policy version, ruleset hash, full payload); the
    ``evaluation_runs`` view shows the latest revision."""
    keys = list(context.partition_keys)
    manifests = run_rows.manifests_from_rows(run_manifests)
    metrics = run_rows.metrics_by_run(evaluation_metrics)
    evaluations = run_rows.evaluations_from_rule_rows(rule_results)
    previous = run_rows.previous_revisions(warehouse.latest("evaluation_run_history", keys))
    recorded_at = now_utc()
    reason = context.run.tags.get(REASON_TAG)
    if reason is None and POLICY_VERSION_TAG in context.run.tags:
        reason = f"policy {context.run.tags[POLICY_VERSION_TAG]} backfill"
    records = []
    for key in keys:
        revision, created_at = previous.get(key, (0, recorded_at))
        records.append(
            run_rows.run_record(
                manifests[key],
                metrics[key],
                evaluations[key],
                revision=revision + 1,
                reason=reason or ("evaluated" if revision == 0 else "re-evaluated"),
                recorded_at=recorded_at,
                created_at=created_at,
            )
        )
    frame = run_rows.history_rows(records, recorded_at, context.run_id)
    warehouse.record_run_events(records, recorded_at)
    yield from validated_outputs(
        TableOutput(
            "evaluation_run",
            contracts.EvaluationRunHistoryTable,
            frame,
            {
                "status_counts": dg.MetadataValue.json(dict(Counter(frame["status"]))),
                "recommended_stages": dg.MetadataValue.json(dict(Counter(frame["recommended_stage"]))),
                "new_runs": int((frame["revision"] == 1).sum()),
                "revisions": dg.MetadataValue.json(sorted(set(frame["revision"].astype(int)))),
                "policy_versions": ", ".join(sorted({str(v) for v in frame["policy_version"]})),
            },
        )
    )


@dg.asset(
    **RUN_ASSET,
    dagster_type=table_type(contracts.ValidationReportsTable),
    metadata={"lake_table": "validation_reports"},
    kinds={"html", "markdown"},
    check_specs=[contract_check_spec("validation_report", contracts.ValidationReportsTable)],
    # Only the runs drawn with pictures need their returns, so they are read here for those runs
    # rather than loaded as an input: a backfill over 10,000 runs would read 25 million rows to
    # draw 20 charts.
    deps=[dg.AssetKey("strategy_returns")],
)
def validation_report(
    context: dg.AssetExecutionContext,
    evaluation_run: pd.DataFrame,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
):
    """The validation report (Markdown and HTML with the equity/drawdown and rolling-Sharpe
    pictures) and model card summary of each run's latest revision, written under the report
    root. The Markdown of the first report is the materialisation's preview."""
    keys = list(context.partition_keys)
    records = run_rows.records_from_history(evaluation_run)
    cards = ModelCards(landing.zone())
    overrides = run_rows.review_items_by_run(warehouse.latest("overrides", keys, latest=False), now_utc())
    with_charts = set(keys[:MAX_RUNS_WITH_CHARTS])
    returns = run_rows.returns_by_run(warehouse.latest("strategy_returns", sorted(with_charts))) if with_charts else {}
    generated_at = now_utc()
    preview, picture, pending = None, None, []
    # Files are written by a few threads while the next reports render: a write mostly waits on
    # the disk (fsync) or on S3, and a backfill writes two files for each of thousands of runs.
    with ThreadPoolExecutor(max_workers=REPORT_WRITERS) as writers:
        for key in keys:
            record = records[key]
            card = cards.get(record["strategy_id"])
            files = render_validation_report_files(
                record,
                {"validation": record["validation"], "summary": record["summary"]},
                record["metrics"],
                card,
                overrides.get(key, []),
                returns=returns.get(key) if key in with_charts else None,
                generated_at=generated_at,
            )
            folder = run_report_dir("", record["world_id"], record["strategy_id"], record["run_id"])
            written = writers.submit(warehouse.write_report_files, folder.as_posix(), files)
            pending.append((record, written, card is not None))
            if preview is None:
                preview = files[REPORT_MARKDOWN].decode("utf-8")
                picture = files.get(EQUITY_PNG)
        rows = [
            run_rows.report_row(record, written.result(), has_card, generated_at)
            for record, written, has_card in pending
        ]
    frame = pd.DataFrame(rows, columns=list(run_rows.REPORT_COLUMNS))
    metadata: dict[str, Any] = {
        "reports": len(frame),
        "with_pictures": len(with_charts),
        "report_root": warehouse.reports(),
    }
    if preview is not None:
        metadata["preview"] = dg.MetadataValue.md(preview)
        metadata["first_report"] = dg.MetadataValue.path(frame["html_path"].iloc[0])
    if picture is not None:
        metadata["equity_curve"] = dg.MetadataValue.md(markdown_image(picture, "equity curve and drawdown"))
    yield from validated_outputs(
        TableOutput("validation_report", contracts.ValidationReportsTable, frame, metadata)
    )
