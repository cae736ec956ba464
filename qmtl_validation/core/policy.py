"""The policy DSL: typed, frozen models of a world's validation policy (SPEC §6).

A policy is one YAML (or JSON) document per world version, ``policies/<world>/<version>.yaml``.
:func:`load_policy` parses it into a :class:`Policy`; anything it cannot account for is an error,
never silently dropped:

- an unknown key raises :class:`PolicyError` naming its path and the closest valid key
  (``validation_profiles.backtest.performance.sharp_min: unknown key; did you mean 'sharpe_min'?``);
- a bad value names its path and what was expected;
- duplicate keys, non-string keys and alias bombs are refused (YAML is read with the safe loader
  only, so Python tags are refused too).

Attribute names are the YAML key names, so code reads ``policy.portfolio.max_incremental_var_99``
or ``policy.validation_profiles["backtest"].performance.sharpe_min``. Absent optional blocks are
``None`` (new rules are explicit opt-in); blocks with safe defaults (``selection``, ``validation``,
``risk_profile``, ``risk_hub``, ``annualization``, ``governance``, ``campaign``) are always present.

The legacy top-level selection keys (``thresholds``, ``top_k``, ``correlation``, ``hysteresis``)
are merged into ``selection`` the way QMTL does: for ``thresholds`` the legacy entries win on equal
names, for the other three the ``selection`` block wins when both give one.

Durations (``max_lag``, ``min_history``, ``cooldown``, ...) are strings ``<number><unit>`` with unit
``s``, ``m``, ``h``, ``d`` or ``w`` (``30s``, ``5m``, ``2h``, ``180d``) and parse to
:class:`datetime.timedelta`.

:func:`policy_schema` lists every key of the grammar with its type, default and description; the
DSL reference in the docs is generated from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

SEVERITIES = ("blocking", "soft", "info")
OWNERS = ("quant", "risk", "ops")
STAGES = ("backtest", "paper", "live")
RECOMMENDED_STAGES = ("backtest_only", "paper_only", "paper_ok_live_candidate")

# Refuse documents that are implausibly large for a policy, before and after alias expansion
# (a "billion laughs" document is small on disk and enormous once its aliases are expanded).
MAX_POLICY_BYTES = 1_000_000
MAX_EXPANDED_NODES = 20_000


class PolicyError(ValueError):
    """A policy that cannot be applied; the message names the offending YAML path."""


class FrozenMap(dict):
    """A read-only dict: policy models are immutable, but stay plain-JSON friendly."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("policy mappings are read-only")

    __setitem__ = __delitem__ = _readonly  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))


# --------------------------------------------------------------------------------------------
# Value kinds: each parses one YAML value at a path and describes itself for the schema.


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fail(path: str, message: str) -> PolicyError:
    return PolicyError(f"{path or '<top level>'}: {message}")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Kind:
    type_name = "any"

    def parse(self, value: Any, path: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def to_plain(self, value: Any) -> Any:
        return value


class _Number(_Kind):
    def __init__(
        self,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        integer: bool = False,
        exclusive_minimum: bool = False,
    ):
        self.minimum = minimum
        self.maximum = maximum
        self.integer = integer
        self.exclusive_minimum = exclusive_minimum
        noun = "an integer" if integer else "a number"
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        self.type_name = noun + (" " + " and ".join(bounds) if bounds else "")

    def parse(self, value: Any, path: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        if self.integer:
            if isinstance(value, float):
                if not value.is_integer():
                    raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
                value = int(value)
        else:
            value = float(value)
        too_low = self.minimum is not None and (
            value <= self.minimum if self.exclusive_minimum else value < self.minimum
        )
        too_high = self.maximum is not None and value > self.maximum
        if too_low or too_high:
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        return value


class _Bool(_Kind):
    type_name = "a boolean (true/false)"

    def parse(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        return value


class _Choice(_Kind):
    def __init__(self, *choices: str):
        self.choices = choices
        self.type_name = "one of " + ", ".join(choices)

    def parse(self, value: Any, path: str) -> str:
        text = value.strip().lower() if isinstance(value, str) else None
        if text not in self.choices:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(text or "", self.choices, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}{hint}")
        return text  # type: ignore[return-value]


class _Text(_Kind):
    def __init__(self, pattern: str | None = None, description: str = "a non-empty string"):
        self.pattern = re.compile(pattern) if pattern else None
        self.type_name = description

    def parse(self, value: Any, path: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        text = str(value).strip()
        if not text or (self.pattern is not None and not self.pattern.fullmatch(text)):
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        return text


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any, path: str = "") -> timedelta:
    """``'30s'``, ``'5m'``, ``'2h'``, ``'180d'``, ``'2w'`` → timedelta (raises PolicyError)."""
    text = value.strip().lower() if isinstance(value, str) else None
    match = _DURATION.fullmatch(text or "")
    if isinstance(value, bool) or match is None:
        raise _fail(path, f"expected a duration like '30s', '5m', '2h' or '180d', got {_describe(value)}")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """The shortest exact ``<n><unit>`` spelling of ``value`` (inverse of :func:`parse_duration`)."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"


def describe_duration(value: timedelta) -> str:
    """A readable approximation for messages: ``60.8d``, ``3.5h``, ``12.0m``, ``40s``."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


class _Duration(_Kind):
    type_name = "a duration like '30s', '5m', '2h', '180d'"

    def parse(self, value: Any, path: str) -> timedelta:
        return parse_duration(value, path)

    def to_plain(self, value: timedelta) -> str:
        return format_duration(value)


class _ListOf(_Kind):
    def __init__(self, item: _Kind):
        self.item = item
        self.type_name = f"a list of {item.type_name}"

    def parse(self, value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        return tuple(self.item.parse(v, f"{path}[{i}]") for i, v in enumerate(value))

    def to_plain(self, value: tuple[Any, ...]) -> list[Any]:
        return [self.item.to_plain(v) for v in value]


class _MapOf(_Kind):
    def __init__(self, item: _Kind, placeholder: str, key_pattern: str | None = None):
        self.item = item
        self.placeholder = placeholder
        self.key_pattern = re.compile(key_pattern) if key_pattern else None
        self.type_name = f"a mapping of {placeholder} to {item.type_name}"

    def parse(self, value: Any, path: str) -> FrozenMap:
        if value is None:
            return FrozenMap()
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected {self.type_name}, got {_describe(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.strip():
                raise _fail(path, f"names must be non-empty strings, got {_describe(key)}")
            if self.key_pattern is not None and not self.key_pattern.fullmatch(key):
                raise _fail(_join(path, key), f"name must match {self.key_pattern.pattern}")
            parsed = self.item.parse(item, _join(path, key))
            if isinstance(self.item, _Model):
                parsed = self.item.cls._with_entry_name(parsed, key, _join(path, key))  # type: ignore[attr-defined]
            out[key] = parsed
        return FrozenMap(out)

    def to_plain(self, value: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self.item.to_plain(v) for k, v in value.items()}


class _Model(_Kind):
    def __init__(self, cls: type):
        self.cls = cls
        self.type_name = "a mapping"

    def parse(self, value: Any, path: str) -> Any:
        return _parse_model(self.cls, value, path)

    def to_plain(self, value: Any) -> Any:
        return None if value is None else value.to_dict()


def _key(kind: _Kind, default: Any, doc: str, *, required: bool = False) -> Any:
    """A model field: its value kind, default and one-line description (the schema's source)."""
    metadata = {"kind": kind, "doc": doc, "required": required}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        template = default
        if isinstance(template, dict):
            return field(default_factory=lambda: FrozenMap(template), metadata=metadata)
        if isinstance(template, list):
            return field(default_factory=lambda: tuple(template), metadata=metadata)
        return field(default_factory=lambda: template, metadata=metadata)
    return field(default=default, metadata=metadata)


class _PolicyModel:
    """Shared behaviour of every DSL block: parsing helpers, ``to_dict`` with YAML spellings."""

    @classmethod
    def _with_entry_name(cls, parsed: Any, name: str, path: str) -> Any:
        return parsed

    def _check(self, path: str) -> None:
        """Cross-field validation; raise PolicyError naming ``path``."""

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that :func:`load_policy` accepts back (durations as ``'5m'``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "kind" not in f.metadata:
                continue
            value = getattr(self, f.name)
            out[f.name] = None if value is None else f.metadata["kind"].to_plain(value)
        return out


def _parse_model(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected a mapping with keys {', '.join(_model_keys(cls))}, got {_describe(data)}")
    spec = {f.name: f for f in dataclasses.fields(cls) if "kind" in f.metadata}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise _fail(path, f"keys must be strings, got {_describe(key)}")
        f = spec.get(key)
        if f is None:
            raise _unknown_key(path, key, spec)
        if value is None and not f.metadata["required"]:
            # `key:` written with no value means "the default" (an empty block for blocks that
            # always exist, absent for opt-in ones).
            continue
        kwargs[key] = f.metadata["kind"].parse(value, _join(path, key))
    for name, f in spec.items():
        if f.metadata["required"] and kwargs.get(name) is None:
            raise _fail(_join(path, name), f"required key missing ({f.metadata['kind'].type_name})")
    model = cls(**kwargs)
    model._check(path)
    return model


def _unknown_key(path: str, key: str, spec: Mapping[str, Any]) -> PolicyError:
    valid = sorted(spec)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (valid keys: {', '.join(valid)})"
    return _fail(_join(path, key), f"unknown key{hint}")


def _model_keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if "kind" in f.metadata]


_SEVERITY = _Choice(*SEVERITIES)
_OWNER = _Choice(*OWNERS)
_NON_NEGATIVE = _Number(minimum=0)
_ANY_NUMBER = _Number()
_PROBABILITY = _Number(minimum=0, maximum=1)
_POSITIVE_INT = _Number(minimum=1, integer=True)
_NON_NEGATIVE_INT = _Number(minimum=0, integer=True)
_NAME = _Text(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", "a name matching [A-Za-z0-9][A-Za-z0-9_.-]*")
_METRIC = _Text(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", "a metric name or dotted path")


def _severity_key(rule: str) -> Any:
    return _key(_SEVERITY, None, f"severity of the `{rule}` rule (default: the rule's own)")


def _owner_key(rule: str) -> Any:
    return _key(_OWNER, None, f"owner of the `{rule}` rule (default: the rule's own)")


# --------------------------------------------------------------------------------------------
# Selection (QMTL's thresholds / top_k / correlation / hysteresis)


@dataclass(frozen=True)
class Threshold(_PolicyModel):
    """A bound on one metric; bounds are inclusive. The metric defaults to the entry's name.
    With neither bound the entry only requires the metric to be present."""

    metric: str | None = _key(_METRIC, None, "metric name (`sharpe`) or dotted path (`returns.sharpe`); default: the entry name")
    min: float | None = _key(_ANY_NUMBER, None, "inclusive lower bound")
    max: float | None = _key(_ANY_NUMBER, None, "inclusive upper bound")

    @classmethod
    def _with_entry_name(cls, parsed: "Threshold", name: str, path: str) -> "Threshold":
        if parsed.metric is None:
            return dataclasses.replace(parsed, metric=_METRIC.parse(name, _join(path, "metric")))
        return parsed

    def _check(self, path: str) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _fail(path, f"min {self.min:g} is above max {self.max:g}")


@dataclass(frozen=True)
class TopK(_PolicyModel):
    """Keep the k best runs by ``metric`` (descending); reported by the `performance` rule."""

    metric: str = _key(_METRIC, None, "metric to rank by, descending", required=True)
    k: int = _key(_POSITIVE_INT, None, "how many runs to keep", required=True)


@dataclass(frozen=True)
class Correlation(_PolicyModel):
    """Greedy de-duplication: a run is blocked when |rho| with a kept run exceeds ``max``."""

    max: float = _key(_PROBABILITY, None, "largest allowed |correlation| with an already kept run", required=True)


@dataclass(frozen=True)
class Hysteresis(_PolicyModel):
    """A new run must reach ``enter``; a previously active one must stay at or above ``exit``."""

    metric: str = _key(_METRIC, None, "metric compared with enter/exit", required=True)
    enter: float = _key(_ANY_NUMBER, None, "value a run not previously active must reach", required=True)
    exit: float = _key(_ANY_NUMBER, None, "value a previously active run must stay at or above", required=True)

    def _check(self, path: str) -> None:
        if self.exit > self.enter:
            raise _fail(_join(path, "exit"), f"exit {self.exit:g} is above enter {self.enter:g}")


@dataclass(frozen=True)
class Selection(_PolicyModel):
    """Batch selection settings; thresholds are classified by metric and reported by that rule."""

    thresholds: Mapping[str, Threshold] = _key(_MapOf(_Model(Threshold), "<name>"), {}, "named metric bounds")
    top_k: TopK | None = _key(_Model(TopK), None, "rank cut-off")
    correlation: Correlation | None = _key(_Model(Correlation), None, "correlation limit")
    hysteresis: Hysteresis | None = _key(_Model(Hysteresis), None, "enter/exit band")


# --------------------------------------------------------------------------------------------
# Validation profiles


@dataclass(frozen=True)
class DataCurrencySection(_PolicyModel):
    """How fresh and how long the run's data must be (`data_currency` rule)."""

    max_lag: timedelta | None = _key(_Duration(), None, "largest allowed gap between the run's data end and its submission")
    min_history: timedelta | None = _key(_Duration(), None, "shortest allowed effective history (1 year = 365.25 days)")
    severity: str | None = _severity_key("data_currency")
    owner: str | None = _owner_key("data_currency")


@dataclass(frozen=True)
class SampleSection(_PolicyModel):
    """Sample size requirements (`sample` rule)."""

    min_effective_years: float | None = _key(_NON_NEGATIVE, None, "sample.effective_history_years >=")
    min_trades_total: float | None = _key(_NON_NEGATIVE, None, "sample.n_trades_total >=")
    require_high_vol_regime: bool = _key(_Bool(), False, "require sample.regime_coverage.high_vol > 0")
    severity: str | None = _severity_key("sample")
    owner: str | None = _owner_key("sample")


@dataclass(frozen=True)
class PerformanceSection(_PolicyModel):
    """Return/risk floors (`performance` rule)."""

    sharpe_min: float | None = _key(_ANY_NUMBER, None, "returns.sharpe (annualised) >=")
    max_dd_max: float | None = _key(_NON_NEGATIVE, None, "returns.max_drawdown (positive fraction) <=")
    gain_to_pain_min: float | None = _key(_ANY_NUMBER, None, "returns.gain_to_pain_ratio >=")
    severity: str | None = _severity_key("performance")
    owner: str | None = _owner_key("performance")


@dataclass(frozen=True)
class RobustnessSection(_PolicyModel):
    """Overfitting guards (`robustness` rule)."""

    dsr_min: float | None = _key(_PROBABILITY, None, "robustness.deflated_sharpe_ratio >=")
    cv_sharpe_gap_max: float | None = _key(_NON_NEGATIVE, None, "|sharpe_first_half - sharpe_second_half| <=")
    severity: str | None = _severity_key("robustness")
    owner: str | None = _owner_key("robustness")


@dataclass(frozen=True)
class RiskSection(_PolicyModel):
    """Liquidity, incremental risk and capacity limits (`risk_constraint` rule)."""

    adv_utilization_p95_max: float | None = _key(_NON_NEGATIVE, None, "risk.adv_utilization_p95 <=")
    participation_rate_p95_max: float | None = _key(_NON_NEGATIVE, None, "risk.participation_rate_p95 <=")
    incremental_var_99_max: float | None = _key(_NON_NEGATIVE, None, "risk.incremental_var_99 <=")
    capacity_estimate_base_min: float | None = _key(_NON_NEGATIVE, None, "risk.capacity_estimate_base (notional) >=")
    severity: str | None = _severity_key("risk_constraint")
    owner: str | None = _owner_key("risk_constraint")


@dataclass(frozen=True)
class PortfolioSection(_PolicyModel):
    """Incremental portfolio risk limits (`portfolio` layer; top level or per profile)."""

    max_incremental_var_99: float | None = _key(_NON_NEGATIVE, None, "incremental VaR 99% of adding the run <=")
    max_incremental_es_99: float | None = _key(_NON_NEGATIVE, None, "incremental ES 99% of adding the run <=")
    min_portfolio_sharpe_uplift: float | None = _key(_ANY_NUMBER, None, "portfolio Sharpe uplift of adding the run >=")
    severity: str | None = _severity_key("portfolio")
    owner: str | None = _owner_key("portfolio")


@dataclass(frozen=True)
class ValidationProfile(_PolicyModel):
    """The thresholds one stage is validated with."""

    data_currency: DataCurrencySection | None = _key(_Model(DataCurrencySection), None, "data freshness and history")
    sample: SampleSection | None = _key(_Model(SampleSection), None, "sample size")
    performance: PerformanceSection | None = _key(_Model(PerformanceSection), None, "performance floors")
    robustness: RobustnessSection | None = _key(_Model(RobustnessSection), None, "overfitting guards")
    risk: RiskSection | None = _key(_Model(RiskSection), None, "liquidity / incremental risk / capacity")
    portfolio: PortfolioSection | None = _key(_Model(PortfolioSection), None, "portfolio layer settings for this profile (wins over the top-level block)")


@dataclass(frozen=True)
class ValidationSettings(_PolicyModel):
    """How rules treat missing metrics and their own errors (forced to fail/fail for high-tier
    client-critical worlds)."""

    on_error: str = _key(_Choice("fail", "warn"), "fail", "status of a rule that raises (`rule_error`)")
    on_missing_metric: str = _key(_Choice("fail", "warn", "ignore"), "fail", "what a missing metric does to its rule")


# --------------------------------------------------------------------------------------------
# Extended layers, governance, world settings


@dataclass(frozen=True)
class CohortSection(_PolicyModel):
    """Campaign / multiple-testing layer."""

    sharpe_median_min: float | None = _key(_ANY_NUMBER, None, "median Sharpe of the cohort >=")
    dsr_median_min: float | None = _key(_PROBABILITY, None, "median DSR of the cohort >=")
    top_k: int | None = _key(_POSITIVE_INT, None, "only the k best of the cohort pass")
    severity: str | None = _severity_key("cohort")
    owner: str | None = _owner_key("cohort")


@dataclass(frozen=True)
class BenchmarkSection(_PolicyModel):
    """Uplift over the run's benchmark."""

    min_vs_benchmark_sharpe: float | None = _key(_ANY_NUMBER, None, "Sharpe minus benchmark Sharpe >=")
    severity: str | None = _severity_key("benchmark")
    owner: str | None = _owner_key("benchmark")


@dataclass(frozen=True)
class StressScenario(_PolicyModel):
    """Limits for one stress scenario (positive loss fractions)."""

    dd_max: float | None = _key(_NON_NEGATIVE, None, "scenario max drawdown <=")
    es_99: float | None = _key(_NON_NEGATIVE, None, "scenario ES 99% <=")
    var_99: float | None = _key(_NON_NEGATIVE, None, "scenario VaR 99% <=")


@dataclass(frozen=True)
class StressSection(_PolicyModel):
    """Stress-scenario layer."""

    # Scenario names become metric path segments (``stress.<scenario>.var_99``): no dots.
    scenarios: Mapping[str, StressScenario] = _key(
        _MapOf(_Model(StressScenario), "<scenario>", r"[A-Za-z0-9][A-Za-z0-9_-]*"), {}, "limits per scenario"
    )
    severity: str | None = _severity_key("stress")
    owner: str | None = _owner_key("stress")


@dataclass(frozen=True)
class PaperShadowConsistency(_PolicyModel):
    """Paper/shadow results against the latest backtest of the same strategy."""

    stages: tuple[str, ...] = _key(_ListOf(_NAME), ["paper", "shadow"], "stages the layer applies to")
    min_sharpe_ratio: float | None = _key(_ANY_NUMBER, None, "paper Sharpe / backtest Sharpe >=")
    max_drawdown_ratio: float | None = _key(_NON_NEGATIVE, None, "paper drawdown / backtest drawdown <=")
    max_var_p01_ratio: float | None = _key(_NON_NEGATIVE, None, "paper VaR 1% / backtest VaR 1% <=")
    max_es_p01_ratio: float | None = _key(_NON_NEGATIVE, None, "paper ES 1% / backtest ES 1% <=")
    severity: str | None = _severity_key("paper_shadow_consistency")
    owner: str | None = _owner_key("paper_shadow_consistency")


@dataclass(frozen=True)
class LiveMonitoring(_PolicyModel):
    """Per-strategy live performance and decay against the backtest."""

    lookback_days: int | None = _key(_POSITIVE_INT, None, "window of live periods considered")
    decay_threshold: float | None = _key(_ANY_NUMBER, None, "live Sharpe / backtest Sharpe >=")
    sharpe_min: float | None = _key(_ANY_NUMBER, None, "live Sharpe >=")
    dd_max: float | None = _key(_NON_NEGATIVE, None, "live max drawdown <=")
    severity: str | None = _severity_key("live_monitoring")
    owner: str | None = _owner_key("live_monitoring")


@dataclass(frozen=True)
class LivePromotion(_PolicyModel):
    """Gates for live promotion (recorded only: nothing in this project sets a strategy live)."""

    mode: str = _key(_Choice("disabled", "manual_approval", "auto_apply"), "manual_approval", "how live promotion is approved")
    cooldown: timedelta | None = _key(_Duration(), None, "minimum time between promotions")
    max_live_slots: int | None = _key(_NON_NEGATIVE_INT, None, "most strategies live at once")
    canary_fraction: float | None = _key(_PROBABILITY, None, "capital share of a canary deployment")
    approvers: tuple[str, ...] = _key(_ListOf(_NAME), [], "who may approve")


@dataclass(frozen=True)
class Governance(_PolicyModel):
    live_promotion: LivePromotion = _key(_Model(LivePromotion), LivePromotion(), "live promotion gates")


@dataclass(frozen=True)
class CampaignWindow(_PolicyModel):
    window: timedelta | None = _key(_Duration(), None, "observation window of the stage")


@dataclass(frozen=True)
class CampaignCommon(_PolicyModel):
    min_sample_days: int | None = _key(_NON_NEGATIVE_INT, None, "least days of data for promotion")
    min_trades_total: int | None = _key(_NON_NEGATIVE_INT, None, "least trades for promotion")


@dataclass(frozen=True)
class Campaign(_PolicyModel):
    backtest: CampaignWindow | None = _key(_Model(CampaignWindow), None, "backtest campaign window")
    paper: CampaignWindow | None = _key(_Model(CampaignWindow), None, "paper campaign window")
    common: CampaignCommon | None = _key(_Model(CampaignCommon), None, "requirements common to all stages")


@dataclass(frozen=True)
class RiskProfile(_PolicyModel):
    """The world's risk tier. ``tier: high`` makes robustness blocking; ``high`` plus
    ``client_critical`` forces ``validation`` to fail/fail and never lets an override lower a
    core rule's severity."""

    tier: str | None = _key(_Choice("high", "medium", "low"), None, "world risk tier (default: the run's risk_tier)")
    client_critical: bool = _key(_Bool(), False, "client-critical world")
    max_capital_at_risk_pct: float | None = _key(_Number(minimum=0, maximum=100), None, "largest share of capital at risk, percent")

    @property
    def fail_closed(self) -> bool:
        return self.tier == "high" and self.client_critical


@dataclass(frozen=True)
class RiskHub(_PolicyModel):
    """Risk snapshot settings of the world."""

    max_snapshot_lag: timedelta = _key(_Duration(), timedelta(minutes=5), "snapshot as_of older than this is a freshness breach")
    fallback_correlation: float = _key(_Number(minimum=-1, maximum=1), 0.5, "correlation imputed for unknown pairs")
    allowed_producers: tuple[str, ...] = _key(_ListOf(_NAME), [], "producers (provenance actors) allowed to submit snapshots; empty = any")
    signing_key_env: str | None = _key(
        _Text(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name"),
        None,
        "name of the environment variable holding the HMAC signing key (never the key itself)",
    )


@dataclass(frozen=True)
class Annualization(_PolicyModel):
    periods_per_year: float = _key(_Number(minimum=0, exclusive_minimum=True), 252.0, "return periods per year")
    risk_free_rate: float = _key(_Number(minimum=-1, exclusive_minimum=True), 0.0, "annual risk-free rate (de-annualised geometrically)")


# --------------------------------------------------------------------------------------------
# The policy


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


@dataclass(frozen=True)
class Policy(_PolicyModel):
    """A world's validation policy (one version). See the module docstring for the grammar."""

    policy_version: str | None = _key(_Text(description="a version string"), None, "must equal the file's version when both are known")
    selection: Selection = _key(_Model(Selection), Selection(), "batch selection settings (legacy top-level forms merged in)")
    validation_profiles: Mapping[str, ValidationProfile] = _key(_MapOf(_Model(ValidationProfile), "<profile>"), {}, "profiles by name")
    default_profile_by_stage: Mapping[str, str] = _key(_MapOf(_NAME, "<stage>"), {}, "stage (or stage_only) -> profile name")
    validation: ValidationSettings = _key(_Model(ValidationSettings), ValidationSettings(), "missing-metric and error handling")
    cohort: CohortSection | None = _key(_Model(CohortSection), None, "cohort layer (opt-in)")
    portfolio: PortfolioSection | None = _key(_Model(PortfolioSection), None, "portfolio layer (opt-in)")
    benchmark: BenchmarkSection | None = _key(_Model(BenchmarkSection), None, "benchmark layer (opt-in)")
    stress: StressSection | None = _key(_Model(StressSection), None, "stress layer (opt-in)")
    paper_shadow_consistency: PaperShadowConsistency | None = _key(_Model(PaperShadowConsistency), None, "paper/shadow layer (opt-in)")
    live_monitoring: LiveMonitoring | None = _key(_Model(LiveMonitoring), None, "live monitoring layer (opt-in)")
    governance: Governance = _key(_Model(Governance), Governance(), "promotion governance")
    campaign: Campaign = _key(_Model(Campaign), Campaign(), "campaign windows")
    risk_profile: RiskProfile = _key(_Model(RiskProfile), RiskProfile(), "world risk tier")
    risk_hub: RiskHub = _key(_Model(RiskHub), RiskHub(), "risk snapshot settings")
    annualization: Annualization = _key(_Model(Annualization), Annualization(), "periods per year and risk-free rate")
    # Compiled evaluation plans by (stage, tier); filled by qmtl_validation.core.evaluation.
    _plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _check(self, path: str) -> None:
        names: dict[str, str] = {}
        for name in self.validation_profiles:
            norm = _normalise_name(name)
            if norm in names:
                raise _fail(_join("validation_profiles", name), f"profile name clashes with {names[norm]!r}")
            names[norm] = name
        stages: dict[str, str] = {}
        for stage, profile in self.default_profile_by_stage.items():
            where = _join("default_profile_by_stage", stage)
            norm = _normalise_name(stage)
            if norm in stages:
                raise _fail(where, f"stage clashes with {stages[norm]!r}")
            stages[norm] = stage
            if _normalise_name(profile) not in names:
                close = difflib.get_close_matches(profile, list(self.validation_profiles), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(self.validation_profiles) or "none defined"
                raise _fail(where, f"unknown profile {profile!r} (profiles: {known}){hint}")

    def profile(self, name: str | None) -> ValidationProfile | None:
        """The profile called ``name`` (case- and ``-``/``_``-insensitive), or None."""
        if name is None:
            return None
        wanted = _normalise_name(name)
        for key, profile in self.validation_profiles.items():
            if _normalise_name(key) == wanted:
                return profile
        return None

    def profile_for_stage(self, stage: str) -> str | None:
        """Name of the profile a run of ``stage`` is validated with, or None (SPEC §7).

        Order: ``default_profile_by_stage[stage]``, then ``[stage + "_only"]``, then (for ``live``
        only) ``["paper_ok_live_candidate"]``, then a profile named like the stage. Stage and
        profile names compare case-insensitively with ``-`` equal to ``_``.
        """
        stage = _normalise_name(stage)
        mapping = {_normalise_name(k): v for k, v in self.default_profile_by_stage.items()}
        keys = [stage, stage + "_only"] + (["paper_ok_live_candidate"] if stage == "live" else [])
        for key in keys:
            if key in mapping:
                return self._profile_name(mapping[key])
        return self._profile_name(stage)

    def _profile_name(self, name: str) -> str | None:
        wanted = _normalise_name(name)
        for key in self.validation_profiles:
            if _normalise_name(key) == wanted:
                return key
        return None

    def portfolio_for(self, profile_name: str | None) -> PortfolioSection | None:
        """The portfolio layer settings under a profile: the profile's block, else the top-level one."""
        profile = self.profile(profile_name)
        if profile is not None and profile.portfolio is not None:
            return profile.portfolio
        return self.portfolio

    def effective_tier(self, run_risk_tier: str | None = None) -> str | None:
        """The world's tier (``risk_profile.tier``), else the run's ``risk_tier``."""
        if self.risk_profile.tier is not None:
            return self.risk_profile.tier
        return run_risk_tier.strip().lower() if isinstance(run_risk_tier, str) and run_risk_tier.strip() else None

    @property
    def fail_closed(self) -> bool:
        """High-tier client-critical world: on_error / on_missing_metric are forced to fail."""
        return self.risk_profile.fail_closed

    @property
    def effective_validation(self) -> ValidationSettings:
        if self.fail_closed:
            return ValidationSettings(on_error="fail", on_missing_metric="fail")
        return self.validation


# --------------------------------------------------------------------------------------------
# Metric names in thresholds

# Bare metric names resolve through this fixed table to a path of the nested metrics (SPEC §5),
# never to "whichever leaf of that name comes first" (``returns.sharpe`` and ``benchmark.sharpe``
# both end in ``sharpe``). A bare name not listed here refers to
# ``diagnostics.extra_metrics.<name>``, the extension slot; a dotted name is used as written.
METRIC_ALIASES: Mapping[str, str] = FrozenMap(
    {
        **{
            name: f"returns.{name}"
            for name in (
                "sharpe",
                "sharpe_per_period",
                "volatility",
                "max_drawdown",
                "gain_to_pain_ratio",
                "time_under_water_ratio",
                "sortino_ratio",
                "var_p01",
                "es_p01",
                "max_time_under_water_days",
                "skew",
                "excess_kurtosis",
            )
        },
        **{
            name: f"sample.{name}"
            for name in ("n_periods", "effective_history_years", "n_trades_total", "n_trades_per_year")
        },
        "num_trades": "sample.n_trades_total",
        **{
            name: f"risk.{name}"
            for name in (
                "adv_utilization_p95",
                "participation_rate_p95",
                "incremental_var_99",
                "incremental_es_99",
                "capacity_estimate_base",
            )
        },
        **{
            name: f"robustness.{name}"
            for name in (
                "deflated_sharpe_ratio",
                "probabilistic_sharpe_ratio",
                "min_track_record_years",
                "cv_folds",
                "cv_sharpe_mean",
                "cv_sharpe_std",
                "sharpe_first_half",
                "sharpe_second_half",
            )
        },
        "dsr": "robustness.deflated_sharpe_ratio",
        "psr": "robustness.probabilistic_sharpe_ratio",
        "strategy_complexity": "diagnostics.strategy_complexity",
        "search_intensity": "diagnostics.search_intensity",
        "vs_benchmark_sharpe": "benchmark.vs_benchmark_sharpe",
    }
)

METRIC_CLASSES = ("data_currency", "sample", "performance", "robustness", "risk")

_DATA_CURRENCY_PREFIXES = ("lag", "stale", "fresh", "as_of", "coverage")
_SAMPLE_PREFIXES = ("sample", "history", "effective_history", "n_trades", "num_trades")
_RISK_PREFIXES = (
    "adv_", "participation_rate", "exposure", "var", "es", "beta", "correlation", "leverage",
    "tail", "incremental_", "capacity",
)
_ROBUSTNESS_PREFIXES = (
    "deflated_sharpe", "probabilistic_sharpe", "dsr", "psr", "cv_", "sharpe_first_half",
    "sharpe_second_half", "min_track_record",
)
_BLOCK_CLASSES = {"sample": "sample", "risk": "risk", "robustness": "robustness"}


def resolve_metric_path(name: str) -> str:
    """Dotted path of a threshold's metric: as written if dotted, else via :data:`METRIC_ALIASES`,
    else ``diagnostics.extra_metrics.<name>``."""
    if "." in name:
        return name
    return METRIC_ALIASES.get(name) or f"diagnostics.extra_metrics.{name}"


def classify_metric(name: str) -> str:
    """Which rule reports a ``selection.thresholds`` entry on ``name`` (one of
    :data:`METRIC_CLASSES`; ``risk`` means the ``risk_constraint`` rule).

    QMTL's prefix classification applied to the metric's leaf name (data currency: ``lag``,
    ``stale``, ``fresh``, ``as_of``, ``coverage``; sample: ``sample``, ``history``,
    ``effective_history``, ``n_trades``, ``num_trades`` or containing ``trade``; risk: ``adv_``,
    ``participation_rate``, ``exposure``, ``var``, ``es``, ``beta``, ``correlation``,
    ``leverage``, ``tail``), with two changes: DSR/PSR, CV and half-sample Sharpe metrics are
    ``robustness`` (SPEC §7 reports the DSR under robustness, not performance), and
    ``incremental_*`` / ``capacity*`` are risk. Otherwise the metrics block of a dotted path
    decides (``sample.*``, ``risk.*``, ``robustness.*``); everything else is ``performance``.
    """
    path = resolve_metric_path(name).lower()
    leaf = path.rsplit(".", 1)[-1]
    if leaf.startswith(_DATA_CURRENCY_PREFIXES):
        return "data_currency"
    if leaf.startswith(_ROBUSTNESS_PREFIXES):
        return "robustness"
    if leaf.startswith(_SAMPLE_PREFIXES) or "trade" in leaf:
        return "sample"
    if leaf.startswith(_RISK_PREFIXES):
        return "risk"
    return _BLOCK_CLASSES.get(path.split(".", 1)[0], "performance")


# --------------------------------------------------------------------------------------------
# Loading


_LEGACY_KEYS = {
    "thresholds": _MapOf(_Model(Threshold), "<name>"),
    "top_k": _Model(TopK),
    "correlation": _Model(Correlation),
    "hysteresis": _Model(Hysteresis),
}


def _safe_yaml(text: str) -> Any:
    """Parse with the safe loader, refusing duplicate keys and large alias expansions."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(f"document larger than {MAX_POLICY_BYTES} bytes")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node) -> None:
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: yaml.Node, path: str) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise PolicyError(f"{path or '<top level>'}: recursive alias")
        active.add(key)
        size = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                    name = "<<"
                elif name in seen:
                    raise PolicyError(f"{_join(path, str(name))}: duplicate key")
                seen.add(name)
                size += walk(key_node, path) + walk(value_node, _join(path, str(name)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += walk(item, f"{path}[{i}]")
        active.discard(key)
        sizes[key] = size
        if size > MAX_EXPANDED_NODES:
            raise PolicyError(f"document expands to more than {MAX_EXPANDED_NODES} nodes (alias bomb?)")
        return size

    walk(root, "")


def _looks_like_path(source: str) -> bool:
    if "\n" in source:
        return False
    if os.path.isfile(source):
        return True
    text = source.strip()
    return text.lower().endswith((".yaml", ".yml", ".json")) and ": " not in text and not text.startswith("{")


def load_policy(
    path_or_yaml_text: str | os.PathLike[str] | Mapping[str, Any],
    *,
    version: str | int | None = None,
) -> Policy:
    """Parse a policy from a file path, YAML/JSON text or an already-parsed mapping.

    The version is ``version`` if given, else the file's stem for a path
    (``policies/<world>/<version>.yaml``), else the ``policy_version`` key of the document; when
    two of these are known they must agree. Raises :class:`PolicyError` (a ``ValueError``) with
    the offending YAML path in the message; a policy that raises is never applied.
    """
    file_version: str | None = None
    if isinstance(path_or_yaml_text, Mapping):
        data: Any = path_or_yaml_text
        origin = ""
    else:
        if isinstance(path_or_yaml_text, os.PathLike) or (
            isinstance(path_or_yaml_text, str) and _looks_like_path(path_or_yaml_text)
        ):
            path = Path(path_or_yaml_text)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise PolicyError(f"policy file not found: {path}") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise PolicyError(f"cannot read policy file {path}: {exc}") from None
            file_version = path.stem
            origin = str(path)
        elif isinstance(path_or_yaml_text, str):
            text = path_or_yaml_text
            origin = ""
        else:
            raise PolicyError(f"expected a path, YAML text or a mapping, got {type(path_or_yaml_text).__name__}")
        try:
            data = _safe_yaml(text)
        except PolicyError as exc:
            raise PolicyError(f"{origin}: {exc}" if origin else str(exc)) from None
    try:
        policy = _build_policy(data)
    except PolicyError as exc:
        raise PolicyError(f"{origin}: {exc}" if origin else str(exc)) from None

    wanted = None if version is None else str(version).strip()
    if file_version is not None:
        if wanted is not None and wanted != file_version:
            raise PolicyError(f"{origin}: version {wanted!r} does not match the file name's {file_version!r}")
        wanted = file_version
    if policy.policy_version is not None and wanted is not None and policy.policy_version != wanted:
        where = f"{origin}: " if origin else ""
        raise PolicyError(
            f"{where}policy_version: {policy.policy_version!r} does not match the version {wanted!r}"
        )
    if wanted is not None and policy.policy_version is None:
        policy = dataclasses.replace(policy, policy_version=wanted)
    return policy


def _build_policy(data: Any) -> Policy:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail("", f"expected a mapping at the top level, got {_describe(data)}")
    data = dict(data)
    legacy = {}
    for key, kind in _LEGACY_KEYS.items():
        if key in data:
            value = data.pop(key)
            legacy[key] = kind.parse(value, key) if value is not None else None
    policy = _parse_model(Policy, data, "")
    if not legacy:
        return policy
    sel = policy.selection
    thresholds = dict(sel.thresholds)
    thresholds.update(legacy.get("thresholds") or {})
    merged = Selection(
        thresholds=FrozenMap(thresholds),
        top_k=sel.top_k or legacy.get("top_k"),
        correlation=sel.correlation or legacy.get("correlation"),
        hysteresis=sel.hysteresis or legacy.get("hysteresis"),
    )
    return dataclasses.replace(policy, selection=merged)


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class SchemaEntry:
    path: str
    type: str
    default: Any
    description: str
    required: bool = False


def _plain_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return None
    if dataclasses.is_dataclass(value):
        return "{}"
    if value is None:
        return None
    return f.metadata["kind"].to_plain(value)


def _walk_schema(cls: type, prefix: str) -> Iterator[SchemaEntry]:
    for f in dataclasses.fields(cls):
        if "kind" not in f.metadata:
            continue
        yield from _schema_for(f.metadata["kind"], _join(prefix, f.name), _plain_default(f), f.metadata["doc"], f.metadata["required"])


def _schema_for(kind: _Kind, path: str, default: Any, doc: str, required: bool) -> Iterator[SchemaEntry]:
    if isinstance(kind, _Model):
        yield SchemaEntry(path, "mapping", default, doc, required)
        yield from _walk_schema(kind.cls, path)
    elif isinstance(kind, _MapOf) and isinstance(kind.item, _Model):
        yield SchemaEntry(path, f"mapping of {kind.placeholder}", default, doc, required)
        yield from _walk_schema(kind.item.cls, _join(path, kind.placeholder))
    else:
        yield SchemaEntry(path, kind.type_name, default, doc, required)


def policy_schema() -> list[SchemaEntry]:
    """Every key of the grammar, depth first: path, type, default and description.

    Map entries appear as placeholders (``validation_profiles.<profile>.sample``). The legacy
    top-level selection keys are listed last with a note that they merge into ``selection``.
    """
    entries = list(_walk_schema(Policy, ""))
    for key, kind in _LEGACY_KEYS.items():
        default: Any = {} if key == "thresholds" else None
        entries.extend(
            _schema_for(kind, key, default, f"legacy form of selection.{key} (merged into selection)", False)
        )
    return entries
