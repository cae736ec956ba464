"""The warehouse table catalogue (SPEC §9): every table's columns, types, grain and meaning.

This module is the documentation of what analysts query. Each table is a folder of Parquet files
under the lake root, partitioned by world (``<lake>/<table>/world_id=<w>/<file>.parquet``), and a
view of the same name in the DuckDB catalog. History is append-only: a table with a
``version_column`` keeps every version of a row, and its ``latest_view`` (when it has one) shows
only the newest version per ``latest_partition``.

Types are Arrow types; :func:`duckdb_type` gives the name DuckDB shows. Timestamps are UTC with
microsecond precision. Columns ending in ``_json`` hold canonical JSON text (sorted keys), queryable
with DuckDB's ``->>`` / ``json_extract``. Nothing here reads files or imports DuckDB.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

import pyarrow as pa

STRING = pa.string()
DOUBLE = pa.float64()
BIGINT = pa.int64()
BOOLEAN = pa.bool_()
TIMESTAMP = pa.timestamp("us", tz="UTC")
DATE = pa.date32()
STRING_LIST = pa.list_(pa.string())

PARTITION_COLUMN = "world_id"

_DUCKDB_NAMES: dict[pa.DataType, str] = {
    STRING: "VARCHAR",
    DOUBLE: "DOUBLE",
    BIGINT: "BIGINT",
    BOOLEAN: "BOOLEAN",
    TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
    DATE: "DATE",
    STRING_LIST: "VARCHAR[]",
}


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type name a column of ``arrow_type`` shows in the catalog."""
    return _DUCKDB_NAMES.get(arrow_type, str(arrow_type).upper())


class Column(NamedTuple):
    """One column: Arrow type, what it means, and whether every row must carry a value.

    A required column must be present in what a writer hands the lake and must not hold nulls;
    an optional column may be absent (it is written as all-null) or hold nulls.
    """

    type: pa.DataType
    description: str
    required: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table.

    - ``key``: the columns that, together with ``version_column`` when there is one, identify a
      row (the table's grain).
    - ``version_column``: orders the versions of one key (a revision number or a timestamp);
      None for tables whose rows are never superseded.
    - ``latest_view``: name of the view showing only the newest version; it keeps every row of
      ``latest_partition`` (default ``key``) whose version equals that partition's maximum, so a
      long table such as ``rule_results`` shows all rules of a run's latest revision.
    - ``open_columns``: writers may add columns not listed here (the wide metrics table); numeric
      extras are stored as DOUBLE, text as VARCHAR, booleans as BOOLEAN, datetimes as UTC
      TIMESTAMP.
    - ``world_optional``: rows may lack a world (``rejections`` of keys with no valid world);
      they are stored under the Hive null partition and read back with ``world_id`` NULL.
    """

    name: str
    description: str
    columns: Mapping[str, Column]
    key: tuple[str, ...]
    version_column: str | None = None
    partitioned_by: str = PARTITION_COLUMN
    latest_view: str | None = None
    latest_partition: tuple[str, ...] | None = None
    open_columns: bool = False
    world_optional: bool = False
    latest_description: str = ""
    _required: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        identity = set(self.key) | {self.version_column} - {None}
        unknown = sorted(c for c in identity | {self.partitioned_by} if c not in self.columns)
        if unknown:
            raise ValueError(f"table {self.name}: key/version/partition columns {unknown} undeclared")
        if self.version_column and not self.columns[self.version_column].required:
            raise ValueError(f"table {self.name}: version column {self.version_column} must be required")
        if self.latest_view and not self.version_column:
            raise ValueError(f"table {self.name}: a latest view needs a version column")
        object.__setattr__(
            self, "_required", tuple(n for n, c in self.columns.items() if c.required)
        )

    @property
    def required_columns(self) -> tuple[str, ...]:
        return self._required

    @property
    def latest_partition_columns(self) -> tuple[str, ...]:
        return self.latest_partition or self.key

    def arrow_schema(self) -> pa.Schema:
        """The declared columns as an Arrow schema (nullable fields: nulls are checked on write)."""
        return pa.schema([pa.field(n, c.type) for n, c in self.columns.items()])


def _columns(*rows: tuple[Any, ...]) -> dict[str, Column]:
    out: dict[str, Column] = {}
    for row in rows:
        name, arrow_type, description, *rest = row
        if name in out:
            raise ValueError(f"duplicate column {name}")
        out[name] = Column(arrow_type, description, bool(rest and rest[0]))
    return out


REQUIRED = True

# Shared column definitions, so one concept reads the same in every table.
_WORLD = ("world_id", STRING, "World (portfolio or venue with its own policy) the row belongs to; also the partition folder.", REQUIRED)
_STRATEGY = ("strategy_id", STRING, "Strategy identifier, as in the landing-zone path.", REQUIRED)
_RUN = ("run_id", STRING, "Evaluation run identifier, unique within the strategy.", REQUIRED)
_RECORDED_AT = ("recorded_at", TIMESTAMP, "When the pipeline wrote the row (UTC).", REQUIRED)
_SNAPSHOT_VERSION = ("version", STRING, "Risk snapshot version, as in `snapshots/<date>/<world>/<version>.json`.", REQUIRED)
_AS_OF = ("as_of", TIMESTAMP, "The snapshot's `as_of`: the moment the risk picture describes (UTC).")
_POLICY_VERSION = ("policy_version", STRING, "Version of the world policy applied (`policies/<world>/<version>.yaml`).")
_RULESET_HASH = ("ruleset_hash", STRING, "`sha256:` digest of the canonical JSON of the resolved profile and every outcome-changing setting.")


# --------------------------------------------------------------------------------------------
# Wide metrics: one DOUBLE column per metric path (dots become double underscores).

METRIC_NOTES_COLUMN = "metric_notes_json"
EXTRA_METRICS_COLUMN = "extra_metrics_json"
# Map-valued metric blocks stored as JSON text rather than spread into columns.
_JSON_METRIC_PATHS = {
    "diagnostics.metric_notes": METRIC_NOTES_COLUMN,
    "diagnostics.extra_metrics": EXTRA_METRICS_COLUMN,
}

METRIC_DESCRIPTIONS: dict[str, str] = {
    "returns.sharpe": "Annualised Sharpe ratio: mean(r)/std(r)·√P (std ddof=1).",
    "returns.sharpe_per_period": "Per-period Sharpe ratio mean(r)/std(r), the input of PSR/DSR.",
    "returns.max_drawdown": "Maximum drawdown of the compounded equity curve starting at 1, as a positive fraction.",
    "returns.gain_to_pain_ratio": "Σr / |Σ negative r|; null when no period lost.",
    "returns.time_under_water_ratio": "Share of periods with equity below its running peak (peak ≥ 1).",
    "returns.sortino_ratio": "Annualised Sortino ratio (downside deviation against 0).",
    "returns.var_p01": "Historical 1% value at risk, a positive loss fraction.",
    "returns.es_p01": "Historical 1% expected shortfall, a positive loss fraction.",
    "returns.max_time_under_water_days": "Longest run of consecutive periods below the running peak, in periods.",
    "returns.skew": "Bias-corrected sample skewness of returns.",
    "returns.excess_kurtosis": "Bias-corrected sample excess kurtosis of returns.",
    "sample.effective_history_years": "Number of return periods / periods per year.",
    "sample.n_trades_total": "Rows of the trades log; null without one.",
    "sample.n_trades_per_year": "n_trades_total / effective_history_years.",
    "sample.regime_coverage.low_vol": "Share of periods in the low tercile of 20-period rolling volatility.",
    "sample.regime_coverage.mid_vol": "Share of periods in the middle tercile of 20-period rolling volatility.",
    "sample.regime_coverage.high_vol": "Share of periods in the high tercile of 20-period rolling volatility.",
    "risk.adv_utilization_p95": "95th percentile of |notional| / adv_notional over trades.",
    "risk.participation_rate_p95": "95th percentile of |qty| / bar_volume over trades.",
    "risk.capacity_estimate_base": "capital × adv_limit / adv_utilization_p95: notional at which p95 ADV use reaches the limit.",
    "robustness.deflated_sharpe_ratio": "Deflated Sharpe ratio (Bailey & López de Prado 2014), a probability.",
    "robustness.probabilistic_sharpe_ratio": "Probabilistic Sharpe ratio against 0, a probability.",
    "robustness.sharpe_first_half": "Annualised Sharpe ratio of the first half of the returns.",
    "robustness.sharpe_second_half": "Annualised Sharpe ratio of the second half of the returns.",
    "robustness.min_track_record_years": "Minimum track record length (95%) in years.",
    "robustness.cv_folds": "Number of contiguous cross-validation folds.",
    "robustness.cv_sharpe_mean": "Mean annualised Sharpe ratio over the folds.",
    "robustness.cv_sharpe_std": "Standard deviation of the folds' annualised Sharpe ratios.",
    "diagnostics.strategy_complexity": "1 + ln(1+search_intensity) + Σ wᵢ ln(1+xᵢ) over complexity inputs.",
    "diagnostics.search_intensity": "Number of variants tried (from run.json, default 1).",
    "diagnostics.returns_source": "Where the returns came from (run.json `returns_source`); text.",
    "diagnostics.validation_health.metric_coverage_ratio": "Share of the twelve v1 core metrics that are non-null.",
    "diagnostics.validation_health.rules_executed_ratio": "Share of the five core rules that produced a result.",
    "diagnostics.validation_health.validation_error_count": "Number of rule results with reason_code rule_error.",
}
_TEXT_METRIC_PATHS = {"diagnostics.returns_source"}


def metric_column(path: str) -> str:
    """Column of the wide metrics table for a dotted metric path: ``returns.sharpe`` → ``returns__sharpe``."""
    return path.replace(".", "__")


def wide_metric_column(path: str) -> str:
    """Column of the wide metrics table for any flat metric path, the two JSON maps included."""
    return _JSON_METRIC_PATHS.get(path) or metric_column(path)


def metric_path(column: str) -> str:
    """Inverse of :func:`metric_column`."""
    return column.replace("__", ".")


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One wide-table row (column → value) from a run's nested metrics dict (SPEC §5 blocks).

    Leaves become ``block__name`` columns; ``diagnostics.metric_notes`` and
    ``diagnostics.extra_metrics`` become the JSON columns; non-finite floats become None.
    """
    row: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for name, value in node.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            if path in _JSON_METRIC_PATHS:
                row[_JSON_METRIC_PATHS[path]] = to_json_text(value) if value else None
            elif isinstance(value, Mapping):
                walk(value, path)
            elif isinstance(value, float) and not math.isfinite(value):
                row[metric_column(path)] = None
            else:
                row[metric_column(path)] = value

    walk(metrics, "")
    return row


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def to_json_text(value: Any) -> str:
    """Canonical JSON text for a ``*_json`` column: sorted keys, compact, NaN/±inf as null."""
    return json.dumps(
        _finite_or_none(value), sort_keys=True, separators=(",", ":"), default=str, allow_nan=False
    )


_METRIC_COLUMNS = tuple(
    (
        metric_column(path),
        STRING if path in _TEXT_METRIC_PATHS else DOUBLE,
        f"`{path}`: {description}",
    )
    for path, description in METRIC_DESCRIPTIONS.items()
)


# --------------------------------------------------------------------------------------------
# The tables.

_TABLE_LIST: tuple[TableSpec, ...] = (
    TableSpec(
        name="evaluation_run_history",
        description=(
            "Append-only history of EvaluationRun summaries: one row per revision of a run. "
            "A run gets a new revision whenever it is re-evaluated (re-materialisation, extended "
            "layers adding results, a policy backfill); earlier revisions are never rewritten."
        ),
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("revision", BIGINT, "1 for the run's first evaluation, +1 for each re-evaluation.", REQUIRED),
            _RECORDED_AT,
            ("reason", STRING, "Why this revision was written, e.g. `initial`, `rematerialized`, `extended_layers`, `policy_backfill`."),
            ("stage", STRING, "Stage the run was submitted at: backtest, paper or live.", REQUIRED),
            ("risk_tier", STRING, "The world's or run's risk tier (e.g. low, medium, high)."),
            ("status", STRING, "Summary status: fail if a blocking rule fails, else warn if any rule fails or warns, else pass.", REQUIRED),
            ("recommended_stage", STRING, "backtest_only, paper_only or paper_ok_live_candidate (never live).", REQUIRED),
            ("profile", STRING, "Validation profile the stage resolved to; null when none applies."),
            _POLICY_VERSION, _RULESET_HASH,
            ("model_card_version", STRING, "Model card version named by run.json, if any."),
            ("submitted_at", TIMESTAMP, "run.json `submitted_at` (UTC)."),
            ("campaign_id", STRING, "run.json `campaign_id`: the research campaign the run belongs to."),
            ("source_etag", STRING, "Content token (etag or hash) of the landing bundle that was evaluated."),
            ("pipeline_run_id", STRING, "Dagster run id that wrote this revision."),
            ("payload_json", STRING, "The whole EvaluationRun document (metrics, validation results, summary) as canonical JSON."),
        ),
        key=("world_id", "strategy_id", "run_id"),
        version_column="revision",
        latest_view="evaluation_runs",
        latest_description="Latest revision of every evaluation run: one row per (world_id, strategy_id, run_id).",
    ),
    TableSpec(
        name="evaluation_metrics",
        description=(
            "Wide metrics: one row per run per computation, one column per metric path with dots "
            "replaced by `__` (e.g. `returns__sharpe`). Undefined metrics are null and their reason "
            "is in `metric_notes_json`. The set of metric columns is open: benchmark metrics and "
            "future paths appear as extra DOUBLE columns."
        ),
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("computed_at", TIMESTAMP, "When the metrics were computed (UTC).", REQUIRED),
            ("revision", BIGINT, "Revision of evaluation_run_history this computation belongs to, when known."),
            ("periods_per_year", DOUBLE, "Annualisation factor P used (world setting, default 252)."),
            *_METRIC_COLUMNS,
            (METRIC_NOTES_COLUMN, STRING, "`diagnostics.metric_notes`: map from metric path to the reason it is null."),
            (EXTRA_METRICS_COLUMN, STRING, "`diagnostics.extra_metrics`: run.json `extra_metrics` passed through."),
        ),
        key=("world_id", "strategy_id", "run_id"),
        version_column="computed_at",
        latest_view="evaluation_metrics_latest",
        latest_description="Latest metrics computation of every run: one row per (world_id, strategy_id, run_id).",
        open_columns=True,
    ),
    TableSpec(
        name="rule_results",
        description="Long rule results: one row per rule per run revision.",
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("revision", BIGINT, "Revision of evaluation_run_history the result belongs to.", REQUIRED),
            ("rule", STRING, "Rule name: data_currency, sample, performance, robustness, risk_constraint, cohort, portfolio, stress, live_monitoring, paper_shadow_consistency, benchmark; `policy` (fail, `policy_unavailable`) when the run was evaluated without a usable policy.", REQUIRED),
            ("status", STRING, "pass, warn or fail.", REQUIRED),
            ("severity", STRING, "blocking, soft or info.", REQUIRED),
            ("owner", STRING, "quant, risk or ops.", REQUIRED),
            ("reason_code", STRING, "Machine-readable reason (e.g. `sharpe_below_min`, `rule_error`).", REQUIRED),
            ("reason", STRING, "Human-readable reason."),
            ("tags", STRING_LIST, "Free tags of the result."),
            ("details_json", STRING, "The result's details (thresholds, observed values) as JSON."),
            ("profile", STRING, "Validation profile the rule ran under."),
            _POLICY_VERSION, _RULESET_HASH,
            ("run_status", STRING, "The run's summary status at this revision (repeated on each of its rules)."),
            ("recommended_stage", STRING, "The run's recommended stage at this revision (repeated on each of its rules)."),
            _RECORDED_AT,
        ),
        key=("world_id", "strategy_id", "run_id", "rule"),
        version_column="revision",
        latest_view="rule_results_latest",
        latest_partition=("world_id", "strategy_id", "run_id"),
        latest_description="All rule results of each run's latest revision.",
    ),
    TableSpec(
        name="overrides",
        description=(
            "Append-only override log. An override never changes a computed status; approved "
            "overrides carry reason, actor and timestamp and are due for re-review."
        ),
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("override_status", STRING, "none, approved or rejected.", REQUIRED),
            ("override_reason", STRING, "Why the override was granted or rejected (required when approved)."),
            ("override_actor", STRING, "Who decided (required when approved)."),
            ("override_timestamp", TIMESTAMP, "When the decision was taken (UTC; required when approved)."),
            ("review_due_at", TIMESTAMP, "When an approved override must be reviewed again: +30 days for live or high-tier critical worlds, else +90."),
            ("stage", STRING, "Stage of the run when the override was recorded."),
            ("risk_tier", STRING, "The world's risk tier when the override was recorded (fixes the review window)."),
            ("client_critical", BOOLEAN, "Whether the world was client-critical (fixes the review window)."),
            _POLICY_VERSION,
            _RECORDED_AT,
            ("prev_hash", STRING, "row_hash of the previous entry of the override log (the chain is global)."),
            ("row_hash", STRING, "sha256 of this entry's canonical JSON including prev_hash: editing any row breaks the chain."),
        ),
        key=("world_id", "strategy_id", "run_id"),
        version_column="recorded_at",
        latest_view="overrides_latest",
        latest_description="The current override decision of each run.",
    ),
    TableSpec(
        name="risk_snapshots",
        description=(
            "Contract-validated risk snapshots: one row per snapshot version and materialisation "
            "(conservative fallback snapshots included, flagged `is_fallback`). The latest view "
            "keeps the newest materialisation of each version; a world's current snapshot is its "
            "row with the greatest `as_of`."
        ),
        columns=_columns(
            _WORLD, _SNAPSHOT_VERSION,
            ("as_of", TIMESTAMP, "The snapshot's `as_of`: the moment the risk picture describes (UTC).", REQUIRED),
            ("hash", STRING, "`sha256:` digest of the snapshot's canonical JSON (SPEC §8).", REQUIRED),
            ("content_hash", STRING, "`sha256:` over the snapshot hash and every referenced Parquet file: equal iff the same content was dropped."),
            ("actor", STRING, "provenance.actor: the producer that submitted the snapshot."),
            ("producer_stage", STRING, "provenance.stage."),
            ("source", STRING, "provenance.source (`conservative_fallback` for a fallback)."),
            ("ttl_sec", BIGINT, "Time to live of the snapshot in seconds."),
            ("n_strategies", BIGINT, "Number of strategies with a non-zero weight.", REQUIRED),
            ("covariance_form", STRING, "`inline`, `ref` (a Parquet file beside the JSON) or `none`.", REQUIRED),
            ("realized_returns_form", STRING, "`inline`, `ref` or `none`.", REQUIRED),
            ("signed", BOOLEAN, "True when the snapshot carried a signature that was verified with the world's key.", REQUIRED),
            ("is_fallback", BOOLEAN, "True for a conservative fallback written after a freshness breach.", REQUIRED),
            ("fallback_of_version", STRING, "For a fallback: the version it was derived from."),
            ("landing_key", STRING, "Landing-zone key of the snapshot JSON (for a fallback: that of the version it derives from)."),
            ("source_etag", STRING, "Content token of the landing drop (JSON and its Parquet files)."),
            ("received_at", TIMESTAMP, "When the drop was taken in from the landing zone (UTC)."),
            ("payload_json", STRING, "The normalised snapshot as canonical JSON (refs stay refs; their rows are in `covariance` / `realized_returns`).", REQUIRED),
            _RECORDED_AT,
        ),
        key=("world_id", "version"),
        version_column="recorded_at",
        latest_view="risk_snapshots_latest",
        latest_partition=("world_id", "version"),
        latest_description="The newest materialisation of every snapshot version: one row per (world_id, version).",
    ),
    TableSpec(
        name="snapshot_weights",
        description="Portfolio weights of each snapshot: one row per strategy per snapshot version and materialisation.",
        columns=_columns(
            _WORLD, _SNAPSHOT_VERSION, _AS_OF, _STRATEGY,
            ("weight", DOUBLE, "Portfolio weight of the strategy (fraction of capital; may be 0 or negative).", REQUIRED),
            ("is_fallback", BOOLEAN, "True for the weights of a fallback snapshot."),
            _RECORDED_AT,
        ),
        key=("world_id", "version", "strategy_id"),
        version_column="recorded_at",
        latest_view="snapshot_weights_latest",
        latest_partition=("world_id", "version"),
        latest_description="Weights of the newest materialisation of every snapshot version.",
    ),
    TableSpec(
        name="covariance",
        description=(
            "Covariance matrix of each snapshot in long form: one row per unordered strategy pair "
            "(`strategy_a` before `strategy_b` in the snapshot's order: weighted strategies, then "
            "the other names the covariance covers) and one per variance (`strategy_a` = "
            "`strategy_b`). Per-period units as submitted."
        ),
        columns=_columns(
            _WORLD, _SNAPSHOT_VERSION, _AS_OF,
            ("strategy_a", STRING, "First strategy of the pair.", REQUIRED),
            ("strategy_b", STRING, "Second strategy of the pair (equal to strategy_a for a variance).", REQUIRED),
            ("covariance", DOUBLE, "Covariance of the two strategies' per-period returns (variance on the diagonal).", REQUIRED),
            ("correlation", DOUBLE, "Correlation implied by the covariance and the two variances; null when a variance is 0."),
            ("imputed", BOOLEAN, "True when the pair was missing and imputed as fallback_correlation × σa × σb.", REQUIRED),
            ("is_fallback", BOOLEAN, "True for the covariance of a fallback snapshot (correlations raised to at least the fallback correlation)."),
            _RECORDED_AT,
        ),
        key=("world_id", "version", "strategy_a", "strategy_b"),
        version_column="recorded_at",
        latest_view="covariance_latest",
        latest_partition=("world_id", "version"),
        latest_description="The covariance rows of the newest materialisation of every snapshot version.",
    ),
    TableSpec(
        name="realized_returns",
        description=(
            "Realized per-period returns carried by each snapshot (inline or from its Parquet ref): "
            "one row per strategy and period. Series end at the snapshot's as_of: `period` 0 is "
            "the newest period, -1 the one before, and so on."
        ),
        columns=_columns(
            _WORLD, _SNAPSHOT_VERSION, _AS_OF, _STRATEGY,
            ("period", BIGINT, "Position of the period relative to the newest one (0, -1, -2, ...).", REQUIRED),
            ("date", DATE, "Trading day of the period when the producer gave dates (Parquet form); null inline."),
            ("ret", DOUBLE, "Simple return of the period, a decimal fraction.", REQUIRED),
            _RECORDED_AT,
        ),
        key=("world_id", "version", "strategy_id", "period"),
        version_column="recorded_at",
        latest_view="realized_returns_latest",
        latest_partition=("world_id", "version"),
        latest_description="The realized returns of the newest materialisation of every snapshot version.",
    ),
    TableSpec(
        name="portfolio_risk",
        description=(
            "Gaussian portfolio risk of each snapshot (zero mean, α = 0.99): a `portfolio` row with "
            "the book's volatility, VaR, ES and historical VaR/ES, a `member` row per weighted "
            "strategy with its component VaR/ES (they sum to the portfolio's), and a `candidate` "
            "row per candidate strategy (runs of the world recommended `paper_only` or "
            "`paper_ok_live_candidate`) with its incremental VaR/ES at weight α_c. VaR and ES are "
            "positive loss fractions per period."
        ),
        columns=_columns(
            _WORLD, _SNAPSHOT_VERSION, _AS_OF,
            ("computed_at", TIMESTAMP, "When the figures were computed (UTC).", REQUIRED),
            ("scope", STRING, "portfolio, member or candidate.", REQUIRED),
            ("strategy_id", STRING, "Strategy of a member or candidate row; null for the portfolio row."),
            ("run_id", STRING, "For a candidate: the run that made the strategy a candidate (its latest such run)."),
            ("weight", DOUBLE, "Weight of the member, or candidate weight α_c for a candidate."),
            ("alpha", DOUBLE, "Confidence level (0.99).", REQUIRED),
            ("volatility", DOUBLE, "σ_p = √(wᵀΣw) per period (portfolio row); σ_i for members and candidates."),
            ("var", DOUBLE, "Value at risk z_α·σ_p (portfolio row)."),
            ("es", DOUBLE, "Expected shortfall σ_p·φ(z_α)/(1−α) (portfolio row)."),
            ("historical_var", DOUBLE, "Historical VaR of the weighted realized returns (portfolio row); null with fewer than 2 complete periods."),
            ("historical_es", DOUBLE, "Historical ES of the weighted realized returns (portfolio row)."),
            ("historical_periods", BIGINT, "Periods in which every weighted strategy has a realized return (portfolio row)."),
            ("historical_covered_weight", DOUBLE, "Σ|w| of the weighted strategies with a realized series / Σ|w| (portfolio row)."),
            ("component_var", DOUBLE, "Euler component VaR of a member; members sum to the portfolio VaR."),
            ("component_es", DOUBLE, "Euler component ES of a member; members sum to the portfolio ES."),
            ("incremental_var", DOUBLE, "Candidate: VaR with the candidate at α_c (others scaled by 1−α_c) minus the base VaR."),
            ("incremental_es", DOUBLE, "Candidate: ES with the candidate minus the base ES."),
            ("var_with_candidate", DOUBLE, "Candidate: portfolio VaR with the candidate added."),
            ("es_with_candidate", DOUBLE, "Candidate: portfolio ES with the candidate added."),
            ("variance_source", STRING, "Candidate: `snapshot` (its variance is in the covariance) or `run_volatility` (σ of its run, de-annualised, cross pairs imputed)."),
            ("imputed_pairs", BIGINT, "Covariance pairs imputed with the fallback correlation (portfolio row: among members; candidate row: its own cross pairs)."),
            ("is_fallback", BOOLEAN, "True when computed on a conservative fallback snapshot.", REQUIRED),
        ),
        key=("world_id", "version", "scope", "strategy_id"),
        version_column="computed_at",
        latest_view="portfolio_risk_latest",
        latest_partition=("world_id", "version"),
        latest_description="The newest computation of every snapshot version's portfolio risk.",
    ),
    TableSpec(
        name="stress_results",
        description=(
            "Stress scenario results of each snapshot: one row per scenario for the book "
            "(`strategy_id` null) and one per scenario and strategy where the snapshot gives "
            "per-strategy figures or shocks. Stress P&L = Σ wᵢ·shockᵢ when the scenario has shocks."
        ),
        columns=_columns(
            _WORLD, _SNAPSHOT_VERSION, _AS_OF,
            ("scenario", STRING, "Stress scenario name.", REQUIRED),
            ("strategy_id", STRING, "Strategy for per-strategy results; null for the book."),
            ("max_drawdown", DOUBLE, "Scenario maximum drawdown, a positive fraction."),
            ("var_99", DOUBLE, "Scenario 99% VaR, a positive fraction."),
            ("es_99", DOUBLE, "Scenario 99% ES, a positive fraction."),
            ("shock", DOUBLE, "The strategy's simple return in the scenario (per-strategy rows of a shocked scenario)."),
            ("stress_pnl", DOUBLE, "Book row: Σ wᵢ·shockᵢ over weighted strategies with a shock; strategy row: wᵢ·shockᵢ. Negative = loss."),
            ("pnl_covered_weight", DOUBLE, "Book row: Σ|w| of the strategies with a shock / Σ|w|."),
            ("status", STRING, "pass, warn (a limited figure is missing) or fail against the world's `stress.scenarios` limits; null without limits for the scenario."),
            ("reason", STRING, "Why the scenario failed or warned."),
            ("computed_at", TIMESTAMP, "When the result was computed (UTC).", REQUIRED),
        ),
        key=("world_id", "version", "scenario", "strategy_id"),
        version_column="computed_at",
        latest_view="stress_results_latest",
        latest_partition=("world_id", "version"),
        latest_description="The newest computation of every snapshot version's stress results.",
    ),
    TableSpec(
        name="live_monitoring",
        description=(
            "Per-strategy live monitoring of each snapshot's realized returns: realized Sharpe and "
            "drawdown over trailing 30/60/90 periods (plus the policy's lookback), live-vs-backtest "
            "decay and demotion candidates. A strategy's current figures are those of its world's "
            "newest snapshot (greatest as_of)."
        ),
        columns=_columns(
            _WORLD, _SNAPSHOT_VERSION, _AS_OF, _STRATEGY,
            ("window_periods", BIGINT, "Trailing window in periods (30, 60, 90, or the policy's lookback).", REQUIRED),
            ("computed_at", TIMESTAMP, "When the figures were computed (UTC).", REQUIRED),
            ("n_periods", BIGINT, "Realized periods available in the window.", REQUIRED),
            ("realized_sharpe", DOUBLE, "Annualised Sharpe ratio of the realized returns in the window (null with a note when undefined)."),
            ("realized_max_drawdown", DOUBLE, "Maximum drawdown of the compounded realized returns in the window, positive."),
            ("backtest_sharpe", DOUBLE, "Annualised Sharpe ratio (`returns.sharpe`) of the strategy's latest backtest run."),
            ("sharpe_decay_ratio", DOUBLE, "Live-vs-backtest decay: realized_sharpe / backtest_sharpe (null unless the backtest Sharpe is positive)."),
            ("breach_sharpe", BOOLEAN, "realized_sharpe below the policy's live_monitoring.sharpe_min.", REQUIRED),
            ("breach_drawdown", BOOLEAN, "realized_max_drawdown above live_monitoring.dd_max.", REQUIRED),
            ("breach_decay", BOOLEAN, "sharpe_decay_ratio below live_monitoring.decay_threshold.", REQUIRED),
            ("demotion_candidate", BOOLEAN, "True when this window breaches a live monitoring limit.", REQUIRED),
            ("strategy_demotion_candidate", BOOLEAN, "True when the strategy breaches in any of its windows.", REQUIRED),
            ("reason", STRING, "Breaches of the window: sharpe_below_min, drawdown_above_max, sharpe_decay (comma-separated)."),
            ("notes", STRING, "Why a figure is null (too few periods, zero dispersion, no backtest Sharpe)."),
        ),
        key=("world_id", "version", "strategy_id", "window_periods"),
        version_column="computed_at",
        latest_view="live_monitoring_latest",
        latest_partition=("world_id", "version"),
        latest_description="The newest computation of every snapshot version's live monitoring.",
    ),
    TableSpec(
        name="cohort_results",
        description="Campaign (multiple-testing) layer: one row per run of a campaign per computation.",
        columns=_columns(
            _WORLD,
            ("campaign_id", STRING, "Research campaign grouping the runs.", REQUIRED),
            _STRATEGY, _RUN,
            ("computed_at", TIMESTAMP, "When the cohort was evaluated (UTC).", REQUIRED),
            ("n_trials", BIGINT, "Number of trials N used for the deflation."),
            ("trials_sharpe_variance", DOUBLE, "Variance (ddof=1) of the campaign's per-period Sharpe ratios."),
            ("sharpe", DOUBLE, "Annualised Sharpe ratio of the run."),
            ("deflated_sharpe_ratio", DOUBLE, "DSR of the run against the campaign's trials."),
            ("rank", BIGINT, "Rank of the run in the campaign by Sharpe (1 = best)."),
            ("status", STRING, "pass, warn or fail of the cohort rule."),
            ("reason_code", STRING, "Machine-readable reason."),
            ("reason", STRING, "Human-readable reason."),
            ("details_json", STRING, "Further details as JSON."),
            _POLICY_VERSION,
        ),
        key=("world_id", "campaign_id", "strategy_id", "run_id"),
        version_column="computed_at",
    ),
    TableSpec(
        name="freshness_breaches",
        description=(
            "Risk snapshot freshness breaches: a row when a breach opens and another when it "
            "closes (same breach_id); an episode triggers one fallback snapshot."
        ),
        columns=_columns(
            _WORLD,
            ("breach_id", STRING, "World + breach start; stable across the episode's rows.", REQUIRED),
            ("status", STRING, "open or closed.", REQUIRED),
            ("started_at", TIMESTAMP, "When the lag first exceeded the SLA (UTC).", REQUIRED),
            ("ended_at", TIMESTAMP, "When a fresh snapshot arrived (UTC); null while open."),
            ("last_as_of", TIMESTAMP, "as_of of the world's latest snapshot when the row was written."),
            ("lag_seconds", DOUBLE, "Snapshot lag when the row was written, in seconds."),
            ("max_lag_seconds", DOUBLE, "The world's `risk_hub.max_snapshot_lag` in seconds."),
            ("fallback_version", STRING, "Version of the fallback snapshot materialised for the episode."),
            _RECORDED_AT,
        ),
        key=("world_id", "breach_id"),
        version_column="recorded_at",
        latest_view="freshness_breaches_latest",
        latest_description="Current state of every breach episode.",
    ),
    TableSpec(
        name="rejections",
        description=(
            "Quarantined landing-zone drops: one row per rejected object or bundle with the exact "
            "reason. The offending file is never deleted."
        ),
        columns=_columns(
            ("key", STRING, "Landing-zone key of the offending object, or the bundle prefix.", REQUIRED),
            ("kind", STRING, "run_bundle, snapshot, policy, model_card or unknown.", REQUIRED),
            ("reason_code", STRING, "Machine-readable reason (e.g. `path_traversal`, `bad_identifier`, `oversize`, `conflict`)."),
            ("reason", STRING, "The exact reason.", REQUIRED),
            ("detected_at", TIMESTAMP, "When the sensor rejected the drop (UTC).", REQUIRED),
            ("size", BIGINT, "Object size in bytes."),
            ("etag", STRING, "Object etag (S3) or content hash (local folder)."),
            ("last_modified", TIMESTAMP, "Object modification time (UTC)."),
            ("world_id", STRING, "World parsed from the key; null when the key has none that is valid."),
            ("strategy_id", STRING, "Strategy parsed from the key, when valid."),
            ("run_id", STRING, "Run parsed from the key, when valid."),
            ("version", STRING, "Snapshot or policy version parsed from the key, when valid."),
            ("conflict", BOOLEAN, "True when a re-drop reuses an id with different content (the first version stays authoritative)."),
            ("quarantine_key", STRING, "Where a copy was put under `quarantine/`, if one was made."),
            ("sensor", STRING, "Sensor that rejected the drop."),
        ),
        key=("key", "detected_at"),
        world_optional=True,
    ),
    TableSpec(
        name="policy_versions",
        description="Every policy version seen for a world, applied or rejected (a policy that does not parse is never applied).",
        columns=_columns(
            _WORLD,
            ("policy_version", STRING, "Version from the file name `policies/<world>/<version>.yaml`.", REQUIRED),
            ("status", STRING, "applied or rejected.", REQUIRED),
            ("error", STRING, "Parse or validation error of a rejected policy (names the offending path)."),
            ("ruleset_hashes_json", STRING, "`{stage: ruleset_hash}` of the version resolved for backtest, paper and live (the hash a run of that stage evaluated under it carries)."),
            ("previous_policy_version", STRING, "The world's applied version before this one; null for its first."),
            ("action", STRING, "What the policy change sensor did: `baseline` (already there when the sensor first ran), `revalidated` (a backfill over the world's runs and a policy diff were launched), `recorded` (the world has no runs yet: policy diff only), `superseded` (a higher version arrived in the same tick), `rejected` (does not parse, never applied). An edit of a version already seen is not a new row but a `policy_changed_in_place` rejection (versions are immutable)."),
            ("runs_revalidated", BIGINT, "Run partitions the launched backfill covers."),
            ("source_key", STRING, "Landing-zone key of the policy file."),
            ("source_etag", STRING, "Etag or content hash of the policy file."),
            ("policy_yaml", STRING, "The policy file as submitted."),
            ("resolved_json", STRING, "The parsed, resolved policy as JSON."),
            _RECORDED_AT,
        ),
        key=("world_id", "policy_version", "recorded_at"),
    ),
    TableSpec(
        name="policy_diff",
        description="What a policy change flips: one row per historical run of the world, old vs new policy version.",
        columns=_columns(
            _WORLD,
            ("old_policy_version", STRING, "The world's previous policy version (the one its runs were evaluated under before the change); null for a world's first policy."),
            ("new_policy_version", STRING, "The new policy version.", REQUIRED),
            _STRATEGY, _RUN,
            ("stage", STRING, "Stage the run was submitted at (backtest, paper or live).", REQUIRED),
            ("changed", BOOLEAN, "True when the summary status, the recommended stage or any rule's status differs.", REQUIRED),
            ("old_status", STRING, "Summary status under the old version."),
            ("new_status", STRING, "Summary status under the new version."),
            ("old_recommended_stage", STRING, "Recommended stage under the old version."),
            ("new_recommended_stage", STRING, "Recommended stage under the new version."),
            ("status_changed", BOOLEAN, "True when the summary status differs."),
            ("stage_changed", BOOLEAN, "True when the recommended stage differs."),
            ("flipped_rules", STRING_LIST, "Rules whose status differs between the versions."),
            ("old_ruleset_hash", STRING, "Ruleset hash under the old version."),
            ("new_ruleset_hash", STRING, "Ruleset hash under the new version."),
            ("computed_at", TIMESTAMP, "When the diff was computed (UTC).", REQUIRED),
        ),
        key=("world_id", "new_policy_version", "strategy_id", "run_id", "computed_at"),
    ),
    TableSpec(
        name="events",
        description=(
            "Outbox of CloudEvents-shaped events (risk_snapshot_updated, evaluation_run_created, "
            "evaluation_run_updated, validation_profile_changed) for downstream consumers. Rows of "
            "a world form a hash chain: row_hash covers the row and prev_hash."
        ),
        columns=_columns(
            ("id", STRING, "CloudEvents `id`: unique event identifier.", REQUIRED),
            ("type", STRING, "CloudEvents `type`, e.g. `evaluation_run_created`.", REQUIRED),
            ("source", STRING, "CloudEvents `source`: the producing asset or sensor.", REQUIRED),
            ("time", TIMESTAMP, "CloudEvents `time` (UTC).", REQUIRED),
            ("subject", STRING, "CloudEvents `subject`, e.g. the run or snapshot partition key."),
            ("specversion", STRING, "CloudEvents spec version (1.0)."),
            ("datacontenttype", STRING, "Content type of data (application/json)."),
            ("data_json", STRING, "The event payload as JSON.", REQUIRED),
            ("idempotency_key", STRING, "Key a consumer uses to drop duplicate deliveries."),
            ("world_id", STRING, "World the event concerns; also the partition folder.", REQUIRED),
            ("prev_hash", STRING, "row_hash of the world's previous event (null for the first)."),
            ("row_hash", STRING, "Hash over the event fields and prev_hash."),
        ),
        key=("id",),
    ),
    TableSpec(
        name="validation_invariants",
        description="Results of the governance invariants (SPEC §7) per world and check.",
        columns=_columns(
            _WORLD,
            ("invariant", STRING, "Invariant name.", REQUIRED),
            ("status", STRING, "pass or fail.", REQUIRED),
            ("strategy_id", STRING, "Strategy concerned, when the invariant is per strategy."),
            ("run_id", STRING, "Run concerned, when per run."),
            ("details_json", STRING, "Evidence as JSON."),
            ("checked_at", TIMESTAMP, "When the invariant was checked (UTC).", REQUIRED),
        ),
        key=("world_id", "invariant", "checked_at"),
    ),
    TableSpec(
        name="validation_reports",
        description="Rendered validation reports: one row per run revision, with where its files are.",
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("revision", BIGINT, "Revision of evaluation_run_history the report describes.", REQUIRED),
            ("status", STRING, "The run's summary status in that revision.", REQUIRED),
            ("recommended_stage", STRING, "The run's recommended stage in that revision.", REQUIRED),
            ("markdown_path", STRING, "report.md (local path or s3:// URI).", REQUIRED),
            ("html_path", STRING, "report.html with the equity, drawdown and rolling-Sharpe pictures.", REQUIRED),
            ("model_card_found", BOOLEAN, "Whether the strategy's model card was found and valid.", REQUIRED),
            _RECORDED_AT,
        ),
        key=("world_id", "strategy_id", "run_id"),
        version_column="recorded_at",
        latest_view="validation_reports_latest",
        latest_description="The newest report of every run.",
    ),
    TableSpec(
        name="landing_registry",
        description=(
            "Every drop taken in from the landing zone: which partition it became, where it landed "
            "and its content. The first registration of a key is authoritative; a later drop of the "
            "same id with other content is a conflict in `rejections`."
        ),
        columns=_columns(
            ("kind", STRING, "run_bundle or snapshot.", REQUIRED),
            ("partition_key", STRING, "`world/strategy/run` or `world/version`.", REQUIRED),
            _WORLD,
            ("landing_prefix", STRING, "Bundle prefix or snapshot key in the landing zone.", REQUIRED),
            ("token", STRING, "Hash of the drop's (file, etag, size) listing: equal for an identical re-drop.", REQUIRED),
            ("content_hash", STRING, "`sha256:` over the drop's file contents.", REQUIRED),
            ("registered_at", TIMESTAMP, "When the drop was taken in (UTC).", REQUIRED),
        ),
        key=("kind", "partition_key"),
        version_column="registered_at",
    ),
    TableSpec(
        name="run_manifests",
        description="The validated run.json of every run taken in, with where it landed.",
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("stage", STRING, "backtest, paper or live.", REQUIRED),
            ("risk_tier", STRING, "low, medium or high.", REQUIRED),
            ("submitted_at", TIMESTAMP, "run.json `submitted_at` (UTC).", REQUIRED),
            ("model_card_version", STRING, "Model card version the run names."),
            ("campaign_id", STRING, "Research campaign the run belongs to."),
            ("search_intensity", BIGINT, "Variants tried (default 1).", REQUIRED),
            ("capital", DOUBLE, "Notional the backtest traded at."),
            ("data_start", DATE, "First return date.", REQUIRED),
            ("data_end", DATE, "Last return date.", REQUIRED),
            ("n_periods", BIGINT, "Number of return periods.", REQUIRED),
            ("has_trades", BOOLEAN, "Whether the bundle has a trades log.", REQUIRED),
            ("landing_prefix", STRING, "Where the bundle landed.", REQUIRED),
            ("content_hash", STRING, "`sha256:` over the bundle's files.", REQUIRED),
            ("manifest_json", STRING, "The validated run.json as canonical JSON.", REQUIRED),
            _RECORDED_AT,
        ),
        key=("world_id", "strategy_id", "run_id"),
        version_column="recorded_at",
        latest_view="run_manifests_latest",
    ),
    TableSpec(
        name="strategy_returns",
        description="Validated daily simple returns of every run (and benchmark returns when given).",
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("date", DATE, "Trading day.", REQUIRED),
            ("ret", DOUBLE, "Simple return of the day, a decimal fraction > -1.", REQUIRED),
            ("benchmark_ret", DOUBLE, "Benchmark simple return of the day, when the bundle has one."),
            _RECORDED_AT,
        ),
        key=("world_id", "strategy_id", "run_id", "date"),
        version_column="recorded_at",
        latest_partition=("world_id", "strategy_id", "run_id"),
    ),
    TableSpec(
        name="strategy_trades",
        description="Validated trades logs of every run that has one.",
        columns=_columns(
            _WORLD, _STRATEGY, _RUN,
            ("ts", TIMESTAMP, "Execution time (UTC).", REQUIRED),
            ("symbol", STRING, "Instrument.", REQUIRED),
            ("side", STRING, "buy or sell.", REQUIRED),
            ("qty", DOUBLE, "Executed quantity (non-zero; sign allowed).", REQUIRED),
            ("price", DOUBLE, "Execution price (> 0).", REQUIRED),
            ("notional", DOUBLE, "Traded value.", REQUIRED),
            ("adv_notional", DOUBLE, "Average daily traded value of the symbol."),
            ("bar_volume", DOUBLE, "Market volume in the execution interval."),
            _RECORDED_AT,
        ),
        key=("world_id", "strategy_id", "run_id", "ts", "symbol"),
        version_column="recorded_at",
        latest_partition=("world_id", "strategy_id", "run_id"),
    ),
)

TABLES: dict[str, TableSpec] = {spec.name: spec for spec in _TABLE_LIST}


def get_table(name: str | TableSpec) -> TableSpec:
    """The TableSpec named ``name`` (a TableSpec passes through); unknown names suggest the closest."""
    if isinstance(name, TableSpec):
        return name
    try:
        return TABLES[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), TABLES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown warehouse table {name!r}{hint}") from None


def latest_views() -> dict[str, TableSpec]:
    """Latest-view name → the history table it reads."""
    return {spec.latest_view: spec for spec in TABLES.values() if spec.latest_view}


def catalogue_markdown(tables: Iterable[TableSpec] | None = None) -> str:
    """The table catalogue as Markdown: one section per table with its grain and column table."""
    lines = ["# Warehouse tables", ""]
    lines.append(
        "Every table is a folder of Parquet files under the lake root, partitioned by "
        "`world_id`, and a view of the same name in the DuckDB catalog. Timestamps are UTC; "
        "`*_json` columns hold canonical JSON text."
    )
    lines.append("")
    for spec in tables if tables is not None else TABLES.values():
        lines.append(f"## `{spec.name}`")
        lines.append("")
        lines.append(spec.description)
        lines.append("")
        grain = ", ".join(f"`{c}`" for c in spec.key)
        if spec.version_column:
            grain += f", versioned by `{spec.version_column}`"
        lines.append(f"- Grain: {grain}")
        lines.append(f"- Partitioned by: `{spec.partitioned_by}`")
        if spec.latest_view:
            about = spec.latest_description or (
                f"the newest `{spec.version_column}` per {', '.join(spec.latest_partition_columns)}."
            )
            lines.append(f"- Latest view: `{spec.latest_view}` — {about}")
        if spec.open_columns:
            lines.append("- Open: writers may add further metric columns (numeric → DOUBLE).")
        lines.append("")
        lines.append("| column | type | required | description |")
        lines.append("| --- | --- | --- | --- |")
        for name, column in spec.columns.items():
            description = column.description.replace("|", "\\|")
            required = "yes" if column.required else ""
            lines.append(f"| `{name}` | {duckdb_type(column.type)} | {required} | {description} |")
        lines.append("")
    return "\n".join(lines)
