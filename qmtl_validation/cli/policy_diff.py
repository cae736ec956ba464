"""``qmtl-validation policy-diff``: what a policy change would flip across historical runs.

    qmtl-validation policy-diff --old policies/w/3.yaml --new policies/w/4.yaml \\
        (--world w | --runs history/ more_runs.json) [--stage backtest] [--threshold 0.05] [--json] [--all]

``--world`` takes the world's runs from the warehouse catalog (each run's latest metrics, stage,
submission time, data end and risk tier, as the pipeline evaluated them). Each ``--runs`` file is
a JSON list of ``{world_id, strategy_id, run_id, metrics, [stage], [context]}`` records; a folder
means every ``*.json`` directly inside it. Runs without a ``stage`` are evaluated at ``--stage``. Prints a table of the runs that change (``--all``: every run) and a
summary, or one JSON document with ``--json``. Exit code 2 when the impact ratio (changed runs /
runs) is above ``--threshold``, else 0.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from qmtl_validation.cli import CliError
from qmtl_validation.cli.progress import progress_iter
from qmtl_validation.core.policy import load_policy
from qmtl_validation.core.policy_diff import PolicyDiff, diff_policies, load_runs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "policy-diff",
        help="evaluate historical runs under two policies and report what changes",
        description="Evaluate historical runs under an old and a new policy; exit 2 when the "
        "share of runs that change is above --threshold.",
    )
    parser.add_argument("--old", required=True, metavar="FILE", help="current policy YAML")
    parser.add_argument("--new", required=True, metavar="FILE", help="proposed policy YAML")
    runs = parser.add_mutually_exclusive_group(required=True)
    runs.add_argument("--world", metavar="WORLD", help="every run of WORLD in the warehouse catalog")
    runs.add_argument("--runs", nargs="+", metavar="FILE_OR_DIR", help="run record JSON files or folders of them")
    parser.add_argument("--catalog", metavar="FILE", help="catalog for --world (default: the profile's catalog_path)")
    parser.add_argument("--stage", default="backtest", help="stage for runs that do not name one (default: backtest)")
    parser.add_argument("--threshold", type=float, default=0.05, help="largest acceptable impact ratio (default: 0.05)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--all", action="store_true", help="list every run, not only the ones that change")
    parser.set_defaults(handler=run)


def world_runs(world_id: str, catalog: str | None) -> list[dict[str, Any]]:
    """Run records of ``world_id`` from the catalog: latest revision's metrics and stage, with
    the context the pipeline evaluated them with (submission time, data end, risk tier)."""
    from qmtl_validation.cli.report import _frame, open_catalog
    from qmtl_validation.core.identifiers import InvalidIdentifierError, check_identifier

    try:
        check_identifier(world_id, "world_id")
    except InvalidIdentifierError as exc:
        raise CliError(str(exc), 2) from None
    connection = open_catalog(catalog)
    try:
        frame = _frame(
            connection,
            "SELECT e.payload_json, m.data_end FROM evaluation_runs e "
            "LEFT JOIN run_manifests_latest m USING (world_id, strategy_id, run_id) "
            "WHERE e.world_id = ? ORDER BY e.strategy_id, e.run_id",
            [world_id],
        )
    finally:
        connection.close()
    records = []
    for payload, data_end in zip(frame["payload_json"], frame["data_end"]):
        record = json.loads(payload)
        context = {"submitted_at": record.get("submitted_at"), "risk_tier": record.get("risk_tier")}
        if data_end is not None and data_end == data_end:  # NaT/NaN when the manifest is missing
            context["data_end"] = data_end.date() if hasattr(data_end, "date") else data_end
        records.append({
            "world_id": record.get("world_id"),
            "strategy_id": record.get("strategy_id"),
            "run_id": record.get("run_id"),
            "metrics": record.get("metrics"),
            "stage": record.get("stage"),
            "context": {k: v for k, v in context.items() if v is not None},
        })
    return records


def _arrow(old: Any, new: Any) -> str:
    return str(old) if old == new else f"{old} -> {new}"


def format_table(diff: PolicyDiff, *, show_all: bool = False) -> str:
    """The human report: one row per (changed) run, then the summary lines."""
    header = ("RUN", "STAGE", "STATUS", "RECOMMENDED STAGE", "RULES CHANGED")
    rows = []
    for run in diff.runs:
        if not (show_all or run.changed):
            continue
        name = "/".join(str(p) for p in (run.world_id, run.strategy_id, run.run_id) if p is not None) or "-"
        rules = ", ".join(f"{rule} {old or '-'}->{new or '-'}" for rule, (old, new) in run.rule_changes.items())
        rows.append((name, run.stage, _arrow(run.old_status, run.new_status), _arrow(run.old_stage, run.new_stage), rules or "-"))
    lines = []
    if rows:
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
        for row in (header, *rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        lines.append("")
    lines.append(
        f"policy {diff.old_version or '?'} -> {diff.new_version or '?'}: "
        f"{diff.changed} of {diff.total} runs change (impact ratio {diff.impact_ratio:.4f})"
    )
    for label, counts in (
        ("status", diff.transitions("status")),
        ("recommended stage", diff.transitions("recommended_stage")),
        ("rules", diff.rule_change_counts()),
    ):
        if counts:
            lines.append(f"  {label}: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.threshold <= 1:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}", 2)
    old = load_policy(args.old)
    new = load_policy(args.new)
    runs = world_runs(args.world, args.catalog) if args.world else load_runs(args.runs)
    if not runs:
        raise CliError("no runs to compare" + (f": world {args.world} has no runs in the catalog" if args.world else ""))
    tracked = progress_iter(runs, "evaluating runs under both policies", enabled=not args.json, unit="runs")
    diff = diff_policies(tracked, old, new, stage=args.stage)
    exceeded = diff.impact_ratio > args.threshold
    if args.json:
        document = diff.to_dict()
        document["threshold"] = args.threshold
        document["threshold_exceeded"] = exceeded
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(format_table(diff, show_all=args.all))
        verdict = "above" if exceeded else "within"
        print(f"impact ratio {diff.impact_ratio:.4f} is {verdict} the threshold {args.threshold:g}")
    return 2 if exceeded else 0
