"""The per-run validation report: what it says, section by section (reference §6.1, fixed).

Inputs are plain data:

- ``run``: the run record — ``world_id``, ``strategy_id``, ``run_id``, ``stage``, ``risk_tier``,
  ``created_at``, ``updated_at``, ``model_card_version``, ``campaign_id`` (all optional except the
  three ids for file output; missing values print as ``n/a``). It may also carry the evaluation's
  ``validation``/``summary`` blocks, used when ``evaluation`` is None.
- ``evaluation``: the ``EvaluationResult.to_dict()`` shape (SPEC §10): ``validation.{policy_version,
  ruleset_hash, profile, results}`` and ``summary.{status, recommended_stage}``. Results may be
  dicts or ``RuleResult`` objects.
- ``metrics``: the nested §5 blocks; ``diagnostics.metric_notes`` maps a dotted path to the reason
  its value is null (or how it was computed).
- ``model_card``: a :class:`ModelCard`, a card mapping, or None.
- ``overrides``: dicts with ``override_status``, ``override_reason``, ``override_actor``,
  ``override_timestamp``, ``review_due_at``, ``review_overdue`` (and optionally ``missing_fields``).

Differences from QMTL's report, on purpose: sections 1–2 read the fields the card schema defines
(``objective``, ``data_overview``, ``key_assumptions``, ``key_limitations``, ``universe``,
``features``); the metrics table lists every path (QMTL cut it at 20 rows) with the reason for each
null; overrides show their re-review due date and whether it is overdue; the rule table shows the
reason code beside the reason.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from qmtl_validation.core.health import CORE_METRIC_PATHS, CORE_RULE_NAMES, get_path
from qmtl_validation.core.model_cards import ModelCard, model_card_from_mapping
from qmtl_validation.core.reports._format import (
    MISSING,
    STATUS_RANK,
    as_mapping,
    details_text,
    flatten,
    format_number,
    format_signed,
    format_timestamp,
    format_value,
    one_line,
    rule_sort_key,
)
from qmtl_validation.core.reports.document import (
    Block,
    Bullets,
    Document,
    Fields,
    Image,
    Paragraph,
    Section,
    Subheading,
    Table,
)

# Block order of the metrics table (SPEC §5); unknown blocks follow alphabetically.
METRIC_BLOCK_ORDER: tuple[str, ...] = (
    "returns",
    "sample",
    "risk",
    "robustness",
    "benchmark",
    "diagnostics",
)
NOTES_PATH = "diagnostics.metric_notes"
# Comparison rows lead with the headline figures; other benchmark metrics follow alphabetically.
BENCHMARK_ORDER: tuple[str, ...] = ("sharpe", "max_drawdown", "volatility")

STAGE_EXPLANATIONS: dict[str, str] = {
    "backtest_only": (
        "Keep the strategy in backtest. The run did not clear its backtest profile (or no current "
        "policy or decision applies to it); resolve the failing rules above and submit a new run."
    ),
    "paper_only": (
        "The strategy may trade on paper. The run cleared the {cleared} profile but not the live "
        "profile; keep it on paper and re-evaluate with a longer track record."
    ),
    "paper_ok_live_candidate": (
        "The strategy is a candidate for live trading: the run cleared the live profile (or the "
        "paper profile where the world has no live profile). Promotion still needs an explicit "
        "operator decision outside this system."
    ),
}
NOTHING_SETS_LIVE = (
    "Nothing in this report or in the validation pipeline sets a strategy live: going live needs "
    "explicit operator intent outside it."
)


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else one_line(str(value))


def _blocks(evaluation: Mapping[str, Any] | None, run: Mapping[str, Any]) -> tuple[dict, dict]:
    source = evaluation if evaluation is not None else run
    validation = as_mapping(source.get("validation"))
    summary = as_mapping(source.get("summary"))
    return validation, summary


def _card(model_card: ModelCard | Mapping[str, Any] | None) -> ModelCard | None:
    if model_card is None or isinstance(model_card, ModelCard):
        return model_card
    return model_card_from_mapping(model_card)


def _rule_rows(results: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    items = [(str(name), as_mapping(result)) for name, result in results.items()]
    return sorted(items, key=lambda item: rule_sort_key(*item))


def _rule_table(rows: Sequence[tuple[str, dict[str, Any]]], empty_text: str) -> Table:
    return Table(
        columns=("Rule", "Status", "Severity", "Owner", "Reason code", "Reason"),
        rows=tuple(
            (
                name,
                _text(result.get("status")).upper(),
                _text(result.get("severity")),
                _text(result.get("owner")),
                _text(result.get("reason_code")),
                # QMTL falls back to the code when there is no text; so do we.
                _text(result.get("reason") or result.get("reason_code")),
            )
            for name, result in rows
        ),
        row_classes=tuple(str(result.get("status") or "").lower() or None for _, result in rows),
        empty_text=empty_text,
    )


def _evidence(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[Block]:
    items = [
        f"{name}: {details_text(result['details'])}"
        for name, result in rows
        if isinstance(result.get("details"), Mapping) and result["details"]
    ]
    return [Subheading("Evidence"), Bullets(tuple(items))] if items else []


def _status_counts(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    if not rows:
        return "no rule results"
    counts: dict[str, int] = {}
    blocking_failures = 0
    for _, result in rows:
        status = str(result.get("status") or "unknown").lower()
        counts[status] = counts.get(status, 0) + 1
        if status == "fail" and str(result.get("severity") or "").lower() == "blocking":
            blocking_failures += 1
    order = sorted(counts, key=lambda s: (STATUS_RANK.get(s, 3), s))
    parts = [f"{counts[s]} {s}" for s in order]
    if blocking_failures:
        parts[0] += f" ({blocking_failures} blocking)"
    return ", ".join(parts)


def _latest_override(overrides: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return overrides[-1] if overrides else None


def _sorted_overrides(overrides: Iterable[Any]) -> list[dict[str, Any]]:
    rows = [as_mapping(o) for o in overrides or ()]
    # Append-only log: order by timestamp, keep the log order among equal/missing timestamps.
    indexed = list(enumerate(rows))
    indexed.sort(key=lambda item: (item[1].get("override_timestamp") is None,
                                   format_timestamp(item[1].get("override_timestamp")), item[0]))
    return [row for _, row in indexed]


def _overdue_text(value: Any) -> str:
    if value is None:
        return MISSING
    return "OVERDUE" if bool(value) else "no"


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Any, str | None]]:
    """Every metric leaf as ``(path, value, note)``, in report order.

    Order: the §5 blocks (returns, sample, risk, robustness, benchmark, diagnostics), then other
    blocks alphabetically; within a block the v1 core metrics first (in their §5 order), then
    the other paths alphabetically. Key order in ``metrics`` does not matter.
    ``diagnostics.metric_notes`` is not a metric: its entries become the notes, and a note for a
    path that is absent from ``metrics`` still gets a row (value ``n/a``) so no documented gap is
    hidden.
    """
    notes_raw = get_path(metrics, NOTES_PATH)
    notes = {str(k): str(v) for k, v in notes_raw.items()} if isinstance(notes_raw, Mapping) else {}
    values: dict[str, Any] = {}
    for path, value in flatten(metrics):
        if path == NOTES_PATH or path.startswith(NOTES_PATH + "."):
            continue
        values[path] = value
    for path in notes:
        values.setdefault(path, None)

    core_rank = {path: index for index, path in enumerate(CORE_METRIC_PATHS)}

    def order(path: str) -> tuple[int, str, int, str]:
        block = path.split(".", 1)[0]
        rank = METRIC_BLOCK_ORDER.index(block) if block in METRIC_BLOCK_ORDER else len(
            METRIC_BLOCK_ORDER
        )
        return (rank, block, core_rank.get(path, len(core_rank)), path)

    return [(path, values[path], notes.get(path)) for path in sorted(values, key=order)]


def _metrics_section(metrics: Mapping[str, Any], image_blocks: list[Block]) -> Section:
    rows = metric_rows(metrics)
    core = set(CORE_METRIC_PATHS)
    present_core = sum(1 for p in CORE_METRIC_PATHS if get_path(metrics, p) is not None)
    nulls = [path for path, value, _ in rows if value is None]
    table_rows = []
    for path, value, note in rows:
        if value is None and not note:
            note = "null; no reason recorded"
        table_rows.append((path, format_value(value), "yes" if path in core else "", note or ""))
    intro = (
        f"{len(rows)} metric values, {len(nulls)} null. "
        f"v1 core coverage: {present_core} of {len(CORE_METRIC_PATHS)} core metrics present "
        f"(the 'Core' column marks them)."
    )
    blocks: list[Block] = [*image_blocks, Paragraph(intro)]
    blocks.append(
        Table(
            columns=("Metric", "Value", "Core", "Note"),
            rows=tuple(table_rows),
            row_classes=tuple("null" if value is None else None for _, value, _ in rows),
            empty_text="No metrics recorded for this run.",
        )
    )
    return Section("5. Metrics", tuple(blocks), anchor="metrics")


def _benchmark_section(metrics: Mapping[str, Any]) -> Section:
    benchmark = metrics.get("benchmark")
    blocks: list[Block] = []
    comparison_rows = []
    other_fields: list[tuple[str, str]] = []
    if isinstance(benchmark, Mapping):
        preferred = {name: i for i, name in enumerate(BENCHMARK_ORDER)}
        leaves = sorted(flatten(benchmark),
                        key=lambda item: (preferred.get(item[0], len(preferred)), item[0]))
        for relative, bench_value in leaves:
            strategy_value = None
            for candidate in (f"returns.{relative}", relative):
                found = get_path(metrics, candidate)
                if isinstance(found, (int, float)) and not isinstance(found, bool):
                    strategy_value = found
                    break
            is_number = isinstance(bench_value, (int, float)) and not isinstance(bench_value, bool)
            if strategy_value is not None and is_number:
                comparison_rows.append(
                    (
                        relative,
                        format_number(strategy_value),
                        format_number(bench_value),
                        format_signed(strategy_value - bench_value),
                    )
                )
            else:
                other_fields.append((f"benchmark.{relative}", format_value(bench_value)))
    for path in (
        "vs_benchmark_sharpe",
        "returns.vs_benchmark_sharpe",
        "diagnostics.extra_metrics.vs_benchmark_sharpe",
        "diagnostics.extra_metrics.benchmark_sharpe",
        "diagnostics.extra_metrics.portfolio_sharpe_uplift",
    ):
        value = get_path(metrics, path)
        if value is not None:
            other_fields.append((path, format_value(value)))
    if not comparison_rows and not other_fields:
        blocks.append(Paragraph("No benchmark was supplied for this run."))
    else:
        if comparison_rows:
            blocks.append(
                Table(
                    columns=("Metric", "Strategy", "Benchmark", "Difference"),
                    rows=tuple(comparison_rows),
                )
            )
        if other_fields:
            blocks.append(Fields(tuple(other_fields)))
    return Section("7. Benchmark comparison", tuple(blocks), anchor="benchmark")


def build_validation_report(
    run: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    model_card: ModelCard | Mapping[str, Any] | None = None,
    overrides: Sequence[Mapping[str, Any]] | None = None,
    *,
    generated_at: Any = None,
    images: Sequence[Image] = (),
) -> Document:
    """The report as a :class:`Document`; see the module docstring for the inputs.

    ``images`` are placed at the top of the metrics section (the renderers decide whether they
    are embedded or linked). Raises :class:`ModelCardError` when ``model_card`` is an invalid
    mapping.
    """
    run = as_mapping(run)
    metrics = as_mapping(metrics)
    validation, summary = _blocks(evaluation, run)
    card = _card(model_card)
    results = validation.get("results") or {}
    all_rows = _rule_rows(results)
    core_rows = [(n, r) for n, r in all_rows if n in CORE_RULE_NAMES]
    extended_rows = [(n, r) for n, r in all_rows if n not in CORE_RULE_NAMES]
    override_rows = _sorted_overrides(overrides or ())
    status = str(summary.get("status") or "").lower() or None
    recommended = summary.get("recommended_stage")
    strategy_id, world_id = run.get("strategy_id"), run.get("world_id")
    card_version = run.get("model_card_version") or (card.model_card_version if card else None)

    # 0. Summary
    summary_fields: list[tuple[str, str | tuple[str, ...]]] = [
        ("Status", _text(status).upper()),
        ("Recommended stage", _text(recommended)),
        ("World", _text(world_id)),
        ("Strategy", _text(strategy_id)),
        ("Run ID", _text(run.get("run_id"))),
        ("Campaign ID", _text(run.get("campaign_id") or summary.get("campaign_id"))),
        ("Stage", _text(run.get("stage"))),
        ("Risk tier", _text(run.get("risk_tier"))),
        ("Model card version", _text(card_version)),
        ("Validation profile", _text(validation.get("profile"))),
        ("Policy version", _text(validation.get("policy_version"))),
        ("Ruleset hash", _text(validation.get("ruleset_hash"))),
        ("Rule outcomes", _status_counts(all_rows)),
    ]
    latest = _latest_override(override_rows)
    if latest is not None:
        text = _text(latest.get("override_status"))
        if latest.get("review_due_at") is not None:
            text += f", re-review due {format_timestamp(latest.get('review_due_at'))}"
        if latest.get("review_overdue"):
            text += " (OVERDUE)"
        summary_fields.append(("Latest override", text))
    if validation.get("extended_revision") is not None:
        summary_fields.append(("Extended revision", _text(validation.get("extended_revision"))))
        summary_fields.append(
            ("Extended evaluated at", format_timestamp(validation.get("extended_evaluated_at")))
        )
    summary_fields += [
        ("Created at", format_timestamp(run.get("created_at"))),
        ("Updated at", format_timestamp(run.get("updated_at"))),
        ("Report generated at", format_timestamp(generated_at)),
    ]
    sections = [Section("0. Summary", (Fields(tuple(summary_fields)),), anchor="summary")]

    # 1. Scope & objective, 2. Model summary: only the fields the card schema defines.
    if card is None:
        missing = (
            f"No model card is registered for strategy {_text(strategy_id)} "
            f"(expected model_cards/{_text(strategy_id)}.yaml); scope, objective and "
            "assumptions are undocumented."
        )
        sections.append(Section("1. Scope & objective", (Paragraph(missing, "warn"),), "scope"))
        sections.append(
            Section("2. Model summary (model card)", (Paragraph("No model card.", "warn"),),
                    "model")
        )
    else:
        def listed(value: str | tuple[str, ...] | None, empty: str) -> str | tuple[str, ...]:
            if value is None or value == ():
                return empty
            return value

        scope_fields = (
            ("Scope", _text(card.scope) if card.scope else "not stated in the model card"),
            ("Objective", _text(card.objective) if card.objective else "not stated"),
            ("Universe", listed(card.universe, "not stated")),
            ("Owner", _text(card.owner)),
        )
        sections.append(Section("1. Scope & objective", (Fields(scope_fields),), "scope"))
        model_fields: list[tuple[str, str | tuple[str, ...]]] = [
            ("Model card", f"{card.strategy_id}, version {_text(card.model_card_version)}"),
            ("Data overview", listed(card.data_overview, "not stated")),
            ("Features", listed(card.features, "not stated")),
            ("Key assumptions", listed(card.key_assumptions, "none stated")),
            ("Key limitations", listed(card.key_limitations, "none stated")),
        ]
        model_blocks: list[Block] = [Fields(tuple(model_fields))]
        if card.extra:
            model_blocks.append(Subheading("Fields outside the card schema"))
            model_blocks.append(
                Fields(tuple((key, format_value(card.extra[key])) for key in card.unknown_keys))
            )
            model_blocks.append(Bullets(card.warnings))
        sections.append(Section("2. Model summary (model card)", tuple(model_blocks), "model"))

    # 3. Validation profile & methods
    health = get_path(metrics, "diagnostics.validation_health")
    method_fields: list[tuple[str, str | tuple[str, ...]]] = [
        ("Stage evaluated", _text(run.get("stage"))),
        ("Validation profile", _text(validation.get("profile"))),
        ("Policy version", _text(validation.get("policy_version"))),
        ("Ruleset hash", _text(validation.get("ruleset_hash"))),
        ("Core rules", ", ".join(n for n, _ in sorted(core_rows)) or "none recorded"),
        ("Extended rules", ", ".join(n for n, _ in sorted(extended_rows)) or "none"),
    ]
    if isinstance(health, Mapping):
        method_fields.append(
            ("Validation health",
             "; ".join(f"{k}={format_value(v)}" for k, v in sorted(health.items())))
        )
    method_notes = Bullets(
        (
            "Status is fail when any blocking rule fails, otherwise warn when any rule fails or "
            "warns, otherwise pass. Soft and info failures only warn.",
            "Thresholds are inclusive bounds; each threshold is reported once, by the rule of its "
            "class.",
            "Metrics follow the project's definitions: annualised Sharpe, drawdown on the "
            "compounded equity curve as a positive loss fraction, deflated Sharpe ratio per "
            "Bailey & López de Prado (2014).",
        )
    )
    sections.append(
        Section("3. Validation profile & methods", (Fields(tuple(method_fields)), method_notes),
                "methods")
    )

    # 4. Results, 4-1. Extended validation
    sections.append(
        Section(
            "4. Results (rule outcomes)",
            (_rule_table(core_rows, "No core rule results recorded."), *_evidence(core_rows)),
            "results",
        )
    )
    sections.append(
        Section(
            "4-1. Extended validation",
            (
                _rule_table(
                    extended_rows,
                    "No extended validation results (cohort, portfolio, stress, live monitoring, "
                    "paper/shadow consistency, benchmark) for this run.",
                ),
                *_evidence(extended_rows),
            ),
            "extended",
        )
    )

    # 5. Metrics
    sections.append(_metrics_section(metrics, list(images)))

    # 6. Overrides
    if override_rows:
        override_blocks: tuple[Block, ...] = (
            Table(
                columns=("Status", "Actor", "Timestamp", "Reason", "Review due", "Overdue",
                         "Missing fields"),
                rows=tuple(
                    (
                        _text(o.get("override_status")),
                        _text(o.get("override_actor")),
                        format_timestamp(o.get("override_timestamp")),
                        _text(o.get("override_reason")),
                        format_timestamp(o.get("review_due_at")),
                        _overdue_text(o.get("review_overdue")),
                        ", ".join(str(f) for f in o.get("missing_fields") or ()) or "",
                    )
                    for o in override_rows
                ),
                row_classes=tuple("overdue" if o.get("review_overdue") else None
                                  for o in override_rows),
            ),
            Paragraph(
                f"An override never changes the computed status (here {_text(status).upper()}). "
                "Approved overrides must be re-reviewed by their due date: 30 days for live runs "
                "and high-tier client-critical worlds, 90 days otherwise."
            ),
        )
    else:
        override_blocks = (Paragraph("No overrides recorded for this run."),)
    sections.append(Section("6. Overrides", override_blocks, "overrides"))

    # 7. Benchmark comparison
    sections.append(_benchmark_section(metrics))

    # 8. Limitations & recommendations
    sections.append(
        _recommendations_section(
            run, recommended, all_rows, metrics, card, override_rows, strategy_id
        )
    )

    title = f"Validation report — {_text(strategy_id)} @ {_text(world_id)}"
    return Document(title=title, sections=tuple(sections), status=status,
                    subtitle=f"run {_text(run.get('run_id'))}")


def _recommendations_section(
    run: Mapping[str, Any],
    recommended: Any,
    rows: Sequence[tuple[str, dict[str, Any]]],
    metrics: Mapping[str, Any],
    card: ModelCard | None,
    overrides: Sequence[Mapping[str, Any]],
    strategy_id: Any,
) -> Section:
    stage = str(run.get("stage") or "").lower()
    explanation = STAGE_EXPLANATIONS.get(str(recommended or ""))
    if explanation is None:
        explanation = (
            "No recommended stage was recorded; treat the strategy as backtest-only until it is "
            "evaluated under a current policy."
        )
    explanation = explanation.format(cleared="backtest" if stage == "backtest" else "paper")
    blocks: list[Block] = [
        Fields((("Recommended stage", f"{_text(recommended)} — {explanation}"),))
    ]

    def describe(name: str, result: Mapping[str, Any]) -> str:
        reason = _text(result.get("reason") or result.get("reason_code"))
        return f"{name} ({_text(result.get('reason_code'))}): {reason}"

    blocking: list[str] = []
    other: list[str] = []
    for name, result in rows:
        status = str(result.get("status") or "").lower()
        if status == "fail" and str(result.get("severity") or "").lower() == "blocking":
            blocking.append(describe(name, result))
        elif status in ("fail", "warn"):
            other.append(describe(name, result))
    if blocking:
        blocks += [Subheading("Blocking failures to resolve"), Bullets(tuple(blocking))]
    if other:
        blocks += [Subheading("Other findings to review"), Bullets(tuple(other))]
    null_metrics = [f"{path}: {note or 'no reason recorded'}"
                    for path, value, note in metric_rows(metrics) if value is None]
    if null_metrics:
        blocks += [Subheading("Metrics that could not be computed"), Bullets(tuple(null_metrics))]
    if card is not None and card.key_limitations:
        blocks += [Subheading("Known limitations (model card)"), Bullets(card.key_limitations)]
    elif card is None:
        blocks.append(
            Paragraph(
                f"Write a model card (model_cards/{_text(strategy_id)}.yaml) stating the "
                "objective, data, key assumptions and limitations before any promotion.",
                "warn",
            )
        )
    overdue = [
        f"{_text(o.get('override_status'))} override by {_text(o.get('override_actor'))}: "
        f"re-review was due {format_timestamp(o.get('review_due_at'))}"
        for o in overrides if o.get("review_overdue")
    ]
    if overdue:
        blocks += [Subheading("Overdue override reviews"), Bullets(tuple(overdue))]
    blocks.append(Paragraph(NOTHING_SETS_LIVE, "note"))
    return Section("8. Limitations & recommendations", tuple(blocks), "recommendations")
