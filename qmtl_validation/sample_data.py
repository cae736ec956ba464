"""Deterministic sample landing zone (SPEC §3) for the demo, the tests and the benchmarks.

Command line::

    python -m qmtl_validation.sample_data --out data/landing [--seed 7] [--today 2026-11-27|today]
                                          [--n-runs N]

writes, under the output root::

    policies/<world_id>/<version>.yaml
    runs/<YYYY-MM-DD>/<world_id>/<strategy_id>/<run_id>/returns.parquet|returns.csv
    runs/<YYYY-MM-DD>/<world_id>/<strategy_id>/<run_id>/trades.parquet|trades.csv   (most bundles)
    runs/<YYYY-MM-DD>/<world_id>/<strategy_id>/<run_id>/run.json                     (written last)
    model_cards/<strategy_id>.yaml                                                   (most strategies)
    snapshots/<YYYY-MM-DD>/<world_id>/<version>.json   (+ <version>.covariance.parquet and
                                                         <version>.realized.parquet for the ref form)
    sample_manifest.json

Python API: :func:`generate_sample` (the whole zone), :func:`write_bundle` / :func:`write_snapshot`
(one drop into any local landing root), :func:`bundle_files` / :func:`snapshot_files` (the same drops
as ``(relative key, bytes)`` pairs, for object stores), :func:`make_run_manifest`.

Determinism
    Every byte follows from ``seed`` and the reference clock ``now``. ``today=None`` means the fixed
    date :data:`DEFAULT_TODAY` at noon UTC, so the default output never changes; ``today="today"``
    (CLI ``--today today``) reads the real UTC clock once, so drop dates and the latest snapshots
    fall inside the sensors' bounded look-back and freshness SLA. Each bundle draws from its own
    random stream (``SeedSequence([seed, repetition, catalog index])``), so the default sample's
    bundles are byte for byte the first bundles of any larger ``n_runs`` sample.

Worlds (SPEC §6 DSL, one YAML per world version)
    ``alpha_core``  high tier, client-critical, fail-closed; backtest/paper/live profiles, a
    profile-level ``portfolio`` block, blocking robustness, ``data_currency``, ``risk_hub`` with an
    allow-list, ``fallback_correlation`` 0.6 and a signing key (env ``QMTL_SIGNING_KEY_ALPHA_CORE``).
    ``beta_growth`` medium tier, ``on_missing_metric: warn``, ``selection`` block, every extended
    layer configured; version 2 is stricter (higher Sharpe floor, lower drawdown cap, more trades,
    blocking robustness), so a policy diff has flips to show. ``gamma_lab`` low tier, lenient,
    legacy top-level ``thresholds``/``top_k``/``hysteresis``, soft sample and risk rules.

Snapshot signing
    The demo signing key of ``alpha_core`` is :data:`DEMO_SIGNING_KEYS` ``["alpha_core"]``; a
    deployment exports it as ``QMTL_SIGNING_KEY_ALPHA_CORE`` (the name the policy's
    ``risk_hub.signing_key_env`` gives; the policy never holds the key). ``signature`` = lowercase hex
    HMAC-SHA256 over ``json.dumps(payload without signature/hash/created_at, sort_keys=True,
    separators=(",", ":"))`` in UTF-8 (SPEC §8); ``hash`` = ``sha256:`` + hex digest of the same
    bytes.

File conventions (what a reader of these files may rely on)
    - returns: ``date`` (parquet date32 / CSV ``YYYY-MM-DD``, business days, increasing, unique),
      ``ret`` (simple return, finite, > −1), optional ``benchmark_ret``.
    - trades: ``ts`` (parquet timestamp[us, UTC] / CSV ISO-8601 with ``Z``), ``symbol``, ``side``
      (``buy``/``sell``), ``qty`` (> 0; ``side`` gives the direction), ``price``, ``notional``
      (= qty × price, > 0), ``adv_notional``, ``bar_volume``.
    - parquet files carry no pandas metadata; CSV uses ``\\n`` line ends and round-trip float text.
    - snapshot covariance: the upper triangle including the diagonal, key ``"a,b"`` with ``a`` before
      ``b`` in the weights' (sorted) order; the parquet form has columns ``strategy_a, strategy_b,
      covariance`` (the long layout ``core.snapshot.parse_covariance`` reads) with the same rows.
      ``beta_growth`` snapshots leave out a few cross pairs (listed in the manifest).
    - a ref without a URI scheme (``v0003.covariance.parquet``) names a file in the snapshot JSON's
      own folder, so the zone can move between disk and S3 unchanged.
    - realized returns in parquet are long form: ``date, strategy_id, ret`` sorted by strategy then
      date; inline they are ``{strategy_id: [oldest, ..., newest]}`` over the same business days
      (ending the business day before ``as_of``).

Manifest and expected outcomes
    ``sample_manifest.json`` lists every policy, model card, bundle and snapshot. Each bundle has an
    ``archetype`` and, per policy version of its world, the *expected* core-rule outcome under the
    profile of its stage (``status``, ``failing_rules``, ``warning_rules``, ``recommended_stage``).
    The expectation comes from a deliberately small threshold check over metrics computed here with
    the SPEC §5 definitions (Sharpe, drawdown, gain-to-pain, half-sample Sharpes, DSR, liquidity,
    capacity, data lag and history span). Draws are repeated until no metric sits within 1 % of a
    threshold (0.04 for DSR, which is also checked under every plausible trial count), so any
    engine implementing SPEC §5–§7 must reach the same verdicts. It assumes what SPEC leaves to the
    rules: ``data_currency.max_lag`` is measured from the last return date to ``submitted_at``,
    ``min_history`` is the calendar span of the returns (either reading of a daily date gives the
    same verdict here), and ``require_high_vol_regime`` is met (tercile coverage of a run's own
    rolling vol is never empty).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from statistics import NormalDist
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from qmtl_validation.core.identifiers import check_identifier
# The snapshot's canonical bytes, hash and signature have one home: the contract module.
from qmtl_validation.core.snapshot import sign_snapshot, snapshot_hash

DEFAULT_SEED = 7
DEFAULT_TODAY = dt.date(2026, 11, 27)
# The reference instant for a date-only ``today``: noon UTC, so a drop "today" has a morning.
DEFAULT_CLOCK_TIME = dt.time(12, 0, 0)
PERIODS_PER_YEAR = 252
MANIFEST_NAME = "sample_manifest.json"

SIGNING_KEY_ENV: dict[str, str] = {"alpha_core": "QMTL_SIGNING_KEY_ALPHA_CORE"}
# Demo key only: it signs the sample snapshots and nothing else. Never put a key in a policy.
DEMO_SIGNING_KEYS: dict[str, str] = {"alpha_core": "qmtl-demo-signing-key-alpha-core-v1"}

CORE_RULES: tuple[str, ...] = (
    "data_currency",
    "sample",
    "performance",
    "risk_constraint",
    "robustness",
)
_EULER_GAMMA = 0.5772156649015329
# A drawn metric closer than this (relative) to any threshold of its world is redrawn, so the
# manifest's expectation cannot hinge on rounding or on an equivalent-but-different formula.
_KNIFE_EDGE = 0.01
_KNIFE_EDGE_DSR = 0.04
_MAX_ATTEMPTS = 400
_AR_KERNEL_LENGTH = 456  # 0.98**456 < 1e-4
_NORMAL = NormalDist()


# =============================================================================================
# Worlds and policies
# =============================================================================================


@dataclass(frozen=True)
class WorldSpec:
    """A sample world: its tier and how its risk snapshots look."""

    world_id: str
    prefix: str
    tier: str
    client_critical: bool
    description: str
    universe: str
    snapshot_count: int
    snapshot_spacing: dt.timedelta
    latest_snapshot_lag: dt.timedelta
    actor: str
    provenance_stage: str
    ttl_sec: int
    constraints: Mapping[str, Any]
    signed: bool = False
    missing_pairs: int = 0
    ref_form_latest: bool = False
    stress_breach: bool = False


WORLDS: tuple[WorldSpec, ...] = (
    WorldSpec(
        world_id="alpha_core",
        prefix="ac",
        tier="high",
        client_critical=True,
        description="Client money, fail-closed: every core rule blocking, signed snapshots.",
        universe="us_equities",
        snapshot_count=4,
        snapshot_spacing=dt.timedelta(days=1),
        latest_snapshot_lag=dt.timedelta(seconds=90),
        actor="risk-engine",
        provenance_stage="live",
        ttl_sec=3600,
        constraints={"max_leverage": 2.0, "adv_util_p95": 0.25},
        signed=True,
    ),
    WorldSpec(
        world_id="beta_growth",
        prefix="bg",
        tier="medium",
        client_critical=False,
        description="House growth book: blocking core rules, soft robustness, extended layers on.",
        universe="global_futures",
        snapshot_count=5,
        snapshot_spacing=dt.timedelta(days=1),
        # Past its 15-minute SLA on purpose: the freshness sensor has a breach to find.
        latest_snapshot_lag=dt.timedelta(minutes=40),
        actor="gateway",
        provenance_stage="live",
        ttl_sec=43200,
        constraints={"candidate_weight": 0.1, "max_leverage": 3.0},
        missing_pairs=3,
        stress_breach=True,
    ),
    WorldSpec(
        world_id="gamma_lab",
        prefix="gl",
        tier="low",
        client_critical=False,
        description="Research sandbox: lenient, soft sample and liquidity rules, missing metrics ignored.",
        universe="fx_majors",
        snapshot_count=3,
        snapshot_spacing=dt.timedelta(hours=8),
        latest_snapshot_lag=dt.timedelta(minutes=20),
        actor="risk-engine",
        provenance_stage="paper",
        ttl_sec=86400,
        constraints={"max_leverage": 4.0},
        ref_form_latest=True,
    ),
)
WORLD_BY_ID: dict[str, WorldSpec] = {w.world_id: w for w in WORLDS}


def _alpha_core_policies() -> dict[int, dict[str, Any]]:
    v1: dict[str, Any] = {
        "risk_profile": {"tier": "high", "client_critical": True, "max_capital_at_risk_pct": 2.0},
        "annualization": {"periods_per_year": PERIODS_PER_YEAR},
        "validation": {"on_error": "fail", "on_missing_metric": "fail"},
        "risk_hub": {
            "max_snapshot_lag": "5m",
            "fallback_correlation": 0.6,
            "allowed_producers": ["risk-engine"],
            "signing_key_env": SIGNING_KEY_ENV["alpha_core"],
        },
        "validation_profiles": {
            "backtest": {
                "data_currency": {"max_lag": "5d", "min_history": "730d"},
                "sample": {
                    "min_effective_years": 3.0,
                    "min_trades_total": 200,
                    "require_high_vol_regime": True,
                },
                "performance": {"sharpe_min": 0.8, "max_dd_max": 0.25, "gain_to_pain_min": 0.08},
                "robustness": {"dsr_min": 0.3, "cv_sharpe_gap_max": 0.8},
                "risk": {
                    "adv_utilization_p95_max": 0.25,
                    "participation_rate_p95_max": 0.15,
                    "capacity_estimate_base_min": 5_000_000,
                },
            },
            "paper": {
                "data_currency": {"max_lag": "4d", "min_history": "180d"},
                "sample": {"min_effective_years": 0.5, "min_trades_total": 40},
                "performance": {"sharpe_min": 0.9, "max_dd_max": 0.15, "gain_to_pain_min": 0.08},
                "robustness": {"dsr_min": 0.3, "cv_sharpe_gap_max": 1.5},
                "risk": {"adv_utilization_p95_max": 0.25, "participation_rate_p95_max": 0.15},
            },
            "live": {
                "data_currency": {"max_lag": "4d", "min_history": "180d"},
                "sample": {"min_effective_years": 0.6, "min_trades_total": 60},
                "performance": {"sharpe_min": 1.1, "max_dd_max": 0.12, "gain_to_pain_min": 0.1},
                "robustness": {"dsr_min": 0.4, "cv_sharpe_gap_max": 1.2},
                "risk": {
                    "adv_utilization_p95_max": 0.2,
                    "participation_rate_p95_max": 0.1,
                    "capacity_estimate_base_min": 10_000_000,
                },
                "portfolio": {
                    "max_incremental_var_99": 0.003,
                    "max_incremental_es_99": 0.0035,
                    "min_portfolio_sharpe_uplift": 0.0,
                },
            },
        },
        "default_profile_by_stage": {"backtest": "backtest", "paper": "paper", "live": "live"},
        "portfolio": {
            "max_incremental_var_99": 0.004,
            "max_incremental_es_99": 0.005,
            "severity": "blocking",
            "owner": "risk",
        },
        "stress": {
            "scenarios": {
                "crash_2008": {"dd_max": 0.30, "var_99": 0.06, "es_99": 0.08},
                "rates_shock": {"dd_max": 0.15},
            },
            "severity": "soft",
            "owner": "risk",
        },
        "live_monitoring": {
            "lookback_days": 90,
            "sharpe_min": 0.3,
            "dd_max": 0.15,
            "decay_threshold": 0.5,
            "severity": "blocking",
            "owner": "risk",
        },
        "paper_shadow_consistency": {
            "stages": ["paper"],
            "min_sharpe_ratio": 0.5,
            "max_drawdown_ratio": 2.0,
            "severity": "soft",
            "owner": "ops",
        },
    }
    return {1: v1}


def _beta_growth_policies() -> dict[int, dict[str, Any]]:
    v1: dict[str, Any] = {
        "risk_profile": {"tier": "medium", "client_critical": False, "max_capital_at_risk_pct": 5.0},
        "annualization": {"periods_per_year": PERIODS_PER_YEAR},
        "validation": {"on_error": "fail", "on_missing_metric": "warn"},
        "risk_hub": {
            "max_snapshot_lag": "15m",
            "fallback_correlation": 0.5,
            "allowed_producers": ["risk-engine", "gateway"],
        },
        "validation_profiles": {
            "backtest": {
                "data_currency": {"max_lag": "7d", "min_history": "365d"},
                "sample": {"min_effective_years": 2.0, "min_trades_total": 100},
                "performance": {"sharpe_min": 0.6, "max_dd_max": 0.30, "gain_to_pain_min": 0.06},
                "robustness": {"dsr_min": 0.2, "cv_sharpe_gap_max": 1.0},
                "risk": {"adv_utilization_p95_max": 0.3, "participation_rate_p95_max": 0.2},
            },
            "paper": {
                "data_currency": {"max_lag": "7d", "min_history": "120d"},
                "sample": {"min_effective_years": 0.4, "min_trades_total": 30},
                "performance": {"sharpe_min": 0.7, "max_dd_max": 0.2, "gain_to_pain_min": 0.07},
                "robustness": {"dsr_min": 0.3},
                "risk": {"adv_utilization_p95_max": 0.3, "participation_rate_p95_max": 0.2},
            },
            "live": {
                "data_currency": {"max_lag": "7d", "min_history": "180d"},
                "sample": {"min_effective_years": 0.5, "min_trades_total": 50},
                "performance": {"sharpe_min": 1.1, "max_dd_max": 0.15, "gain_to_pain_min": 0.1},
                "robustness": {"dsr_min": 0.4, "cv_sharpe_gap_max": 1.2},
                "risk": {
                    "adv_utilization_p95_max": 0.25,
                    "participation_rate_p95_max": 0.15,
                    "incremental_var_99_max": 0.005,
                },
                "portfolio": {"max_incremental_var_99": 0.005, "min_portfolio_sharpe_uplift": 0.0},
            },
        },
        "default_profile_by_stage": {
            "backtest_only": "backtest",
            "paper_only": "paper",
            "paper_ok_live_candidate": "live",
        },
        "selection": {
            "thresholds": {"sharpe_floor": {"metric": "sharpe", "min": 0.0}},
            "correlation": {"max": 0.9},
            "hysteresis": {"metric": "sharpe", "enter": 0.5, "exit": 0.3},
        },
        "cohort": {"sharpe_median_min": 0.5, "dsr_median_min": 0.2, "severity": "soft"},
        "portfolio": {"max_incremental_var_99": 0.006, "max_incremental_es_99": 0.007, "severity": "soft"},
        "benchmark": {"min_vs_benchmark_sharpe": 0.0, "severity": "soft", "owner": "quant"},
        "stress": {
            "scenarios": {
                "crash_2008": {"dd_max": 0.35, "var_99": 0.06},
                "rates_shock": {"dd_max": 0.2},
            },
            "severity": "soft",
        },
        "live_monitoring": {
            "lookback_days": 60,
            "sharpe_min": 0.2,
            "dd_max": 0.2,
            "decay_threshold": 0.4,
            "severity": "soft",
        },
        "paper_shadow_consistency": {
            "stages": ["paper"],
            "min_sharpe_ratio": 0.4,
            "max_drawdown_ratio": 2.5,
            "severity": "soft",
            "owner": "ops",
        },
    }
    v2 = json.loads(json.dumps(v1))
    backtest = v2["validation_profiles"]["backtest"]
    backtest["sample"]["min_trades_total"] = 150
    backtest["performance"].update({"sharpe_min": 0.8, "max_dd_max": 0.25})
    backtest["robustness"]["severity"] = "blocking"
    v2["validation_profiles"]["paper"]["performance"]["sharpe_min"] = 0.85
    return {1: v1, 2: v2}


def _gamma_lab_policies() -> dict[int, dict[str, Any]]:
    v1: dict[str, Any] = {
        "risk_profile": {"tier": "low", "client_critical": False},
        "annualization": {"periods_per_year": PERIODS_PER_YEAR},
        "validation": {"on_error": "warn", "on_missing_metric": "ignore"},
        "risk_hub": {
            "max_snapshot_lag": "1h",
            "allowed_producers": ["risk-engine", "gateway", "research-bot"],
        },
        # QMTL's legacy top-level selection keys, kept so the loader's merge is exercised.
        "thresholds": {"sharpe_floor": {"metric": "sharpe", "min": -0.5}},
        "top_k": {"metric": "sharpe", "k": 100},
        "hysteresis": {"metric": "sharpe", "enter": 0.3, "exit": 0.1},
        "validation_profiles": {
            "backtest": {
                "sample": {"min_effective_years": 1.0, "severity": "soft"},
                "performance": {"sharpe_min": 0.3, "max_dd_max": 0.45},
                "robustness": {"dsr_min": 0.1},
                "risk": {
                    "adv_utilization_p95_max": 0.6,
                    "participation_rate_p95_max": 0.5,
                    "severity": "soft",
                    "owner": "quant",
                },
            },
            "paper": {
                "sample": {"min_effective_years": 0.25},
                "performance": {"sharpe_min": 0.4, "max_dd_max": 0.35},
            },
        },
        "default_profile_by_stage": {"backtest": "backtest", "paper": "paper"},
        "live_monitoring": {"lookback_days": 30, "sharpe_min": 0.0, "severity": "info"},
    }
    return {1: v1}


_POLICY_BUILDERS = {
    "alpha_core": _alpha_core_policies,
    "beta_growth": _beta_growth_policies,
    "gamma_lab": _gamma_lab_policies,
}


def world_policies(world_id: str) -> dict[int, dict[str, Any]]:
    """The sample policy documents of one world, ``{version: document}`` (fresh copies)."""
    return _POLICY_BUILDERS[world_id]()


def render_policy(world_id: str, version: int) -> str:
    """YAML text of ``policies/<world_id>/<version>.yaml`` (a comment header, then the document)."""
    world = WORLD_BY_ID[world_id]
    document = world_policies(world_id)[version]
    header = [
        f"# Sample policy of world {world_id}, version {version} (generated by qmtl_validation.sample_data).",
        f"# {world.description}",
    ]
    if version > 1:
        header.append(f"# Stricter than version {version - 1}: see the policy diff.")
    if "signing_key_env" in document.get("risk_hub", {}):
        header.append(
            "# Snapshots must be signed; the key is read from the environment variable named by "
            "risk_hub.signing_key_env."
        )
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(header) + "\n" + body


# =============================================================================================
# Archetypes and the catalog of sample bundles
# =============================================================================================


@dataclass(frozen=True)
class Archetype:
    """How one kind of sample run is drawn, and what it must look like to the rules.

    Sharpe ratios are annualised targets (met exactly by construction); ``vol`` is daily.
    ``must_fail`` / ``must_pass`` name core rules whose version-1 outcome is asserted while drawing;
    ``clears`` (paper runs) names the profile the run must clear ("live" falls back to "paper" in a
    world without a live profile); ``flips`` asks for a different status under the world's latest
    policy version than under version 1.
    """

    name: str
    stage: str
    expected_outcome: str
    description: str
    years: tuple[float, float]
    sharpe: tuple[float, float]
    vol: tuple[float, float] = (0.006, 0.010)
    trades_per_year: tuple[float, float] | None = (60.0, 180.0)
    trades_total: tuple[int, int] | None = None
    liquidity: str = "normal"
    search_intensity: tuple[int, int] = (1, 12)
    trial_dispersion: float | None = None
    half_sharpes: tuple[float, float] | None = None
    crash: bool = False
    max_drawdown_target: tuple[float, float] | None = None
    stale_days: tuple[int, int] | None = None
    capital: tuple[float, float] = (5e6, 25e6)
    must_fail: frozenset[str] = frozenset()
    must_pass: frozenset[str] = frozenset()
    clears: str | None = None
    flips: bool = False


def _rules(*names: str) -> frozenset[str]:
    return frozenset(names)


ALL_CORE = frozenset(CORE_RULES)

ARCHETYPES: dict[str, Archetype] = {
    a.name: a
    for a in (
        Archetype(
            "good", "backtest", "pass", "Sharpe 1.0-1.5 over 3-6 years, liquid, modest search.",
            years=(3.3, 6.0), sharpe=(1.0, 1.5), must_pass=ALL_CORE,
        ),
        Archetype(
            "bad", "backtest", "fail_performance", "Negative or negligible Sharpe.",
            years=(3.2, 5.5), sharpe=(-0.6, 0.15), must_fail=_rules("performance"),
        ),
        Archetype(
            "borderline", "backtest", "borderline", "Sharpe or drawdown just around a threshold.",
            years=(3.3, 5.0), sharpe=(1.0, 1.0),
        ),
        Archetype(
            "policy_flip", "backtest", "flips_under_stricter_policy",
            "Passes version 1 of its world's policy, fails the stricter version 2.",
            years=(3.3, 5.0), sharpe=(1.0, 1.0), flips=True,
        ),
        Archetype(
            "short_history", "backtest", "fail_sample", "Strong but under a year of history.",
            years=(0.45, 0.8), sharpe=(1.3, 1.7), trades_per_year=(100.0, 250.0),
            must_fail=_rules("sample"), must_pass=_rules("performance", "risk_constraint"),
        ),
        Archetype(
            "high_drawdown", "backtest", "fail_performance_drawdown",
            "Decent Sharpe, but a crash takes the equity curve down by half.",
            years=(3.5, 5.5), sharpe=(1.0, 1.3), crash=True, max_drawdown_target=(0.5, 0.6),
            must_fail=_rules("performance"), must_pass=_rules("sample"),
        ),
        Archetype(
            "illiquid", "backtest", "fail_risk_liquidity",
            "Trades a large share of ADV and of the bar volume.",
            years=(3.3, 5.0), sharpe=(1.1, 1.5), liquidity="illiquid", capital=(8e6, 15e6),
            must_fail=_rules("risk_constraint"), must_pass=_rules("performance", "sample"),
        ),
        Archetype(
            "over_searched", "backtest", "fail_robustness_dsr",
            "Best of hundreds of variants: great Sharpe, deflated Sharpe near zero.",
            years=(3.3, 5.0), sharpe=(1.5, 1.9), search_intensity=(200, 600),
            trial_dispersion=0.06, must_fail=_rules("robustness"),
            must_pass=_rules("performance", "sample"),
        ),
        Archetype(
            "low_trades", "backtest", "fail_sample_trades", "A handful of trades over years.",
            years=(3.3, 5.0), sharpe=(1.0, 1.4), trades_per_year=None, trades_total=(8, 30),
            must_fail=_rules("sample"), must_pass=_rules("performance"),
        ),
        Archetype(
            "missing_trades", "backtest", "missing_trades_log",
            "No trades log: trade-count and liquidity metrics are missing.",
            years=(3.3, 5.0), sharpe=(1.0, 1.4), trades_per_year=None,
            must_pass=_rules("performance"),
        ),
        Archetype(
            "stale_data", "backtest", "fail_data_currency",
            "Returns end weeks before the run was submitted.",
            years=(3.3, 5.0), sharpe=(1.0, 1.4), stale_days=(30, 60),
            must_fail=_rules("data_currency"), must_pass=_rules("performance", "sample"),
        ),
        Archetype(
            "unstable", "backtest", "fail_robustness_gap",
            "Strong first half, flat second half: the half-sample Sharpes disagree.",
            years=(3.5, 5.0), sharpe=(1.0, 1.0), half_sharpes=(2.4, -0.4),
            must_fail=_rules("robustness"), must_pass=_rules("performance", "sample"),
        ),
        Archetype(
            "paper_strong", "paper", "live_candidate",
            "Recent paper trading that clears the live profile.",
            years=(0.8, 1.15), sharpe=(1.6, 2.1), vol=(0.005, 0.007),
            trades_per_year=(110.0, 220.0), capital=(12e6, 25e6), clears="live",
            must_pass=ALL_CORE,
        ),
        Archetype(
            "paper_ok", "paper", "paper_only",
            "Recent paper trading that clears the paper profile but not the live one.",
            years=(0.8, 1.15), sharpe=(1.0, 1.0), vol=(0.005, 0.007),
            trades_per_year=(110.0, 220.0), capital=(12e6, 25e6), clears="paper",
            must_pass=ALL_CORE,
        ),
        Archetype(
            "paper_decay", "paper", "fail_performance_decay",
            "A backtest winner whose paper trading lost money.",
            years=(0.8, 1.15), sharpe=(-1.2, -0.3), vol=(0.006, 0.009),
            trades_per_year=(110.0, 220.0), must_fail=_rules("performance"),
        ),
    )
}


@dataclass(frozen=True)
class CatalogEntry:
    """One bundle of the base catalog: who (strategy), what (archetype) and any tweaks."""

    world_id: str
    strategy_id: str
    archetype: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    campaign: str | None = None
    model_card: bool = True
    returns_format: str = "parquet"
    benchmark: bool = False


def _catalog() -> list[CatalogEntry]:
    """The base catalog: 69 bundles over three worlds (backtests first, then paper runs)."""
    e = CatalogEntry
    backtests = [
        # alpha_core: high tier (sharpe_min 0.8, max_dd_max 0.25, 3 years, 200 trades)
        e("alpha_core", "ac_trend_01", "good", campaign="ac-trend-2026q3"),
        e("alpha_core", "ac_carry_02", "good", benchmark=True),
        e("alpha_core", "ac_value_03", "good", returns_format="csv"),
        e("alpha_core", "ac_momentum_04", "good"),
        e("alpha_core", "ac_quality_05", "good"),
        e("alpha_core", "ac_lowvol_06", "good", benchmark=True),
        e("alpha_core", "ac_reversal_07", "bad"),
        e("alpha_core", "ac_sentiment_08", "bad", model_card=False),
        e("alpha_core", "ac_pairs_09", "borderline", {"sharpe": (0.83, 0.83)}),
        e("alpha_core", "ac_breakout_10", "borderline", {"sharpe": (0.77, 0.77)}),
        e("alpha_core", "ac_seasonal_11", "borderline",
          {"sharpe": (1.2, 1.2), "max_drawdown_target": (0.24, 0.24)}),
        e("alpha_core", "ac_event_12", "short_history"),
        e("alpha_core", "ac_volsell_13", "high_drawdown"),
        e("alpha_core", "ac_smallcap_14", "illiquid"),
        e("alpha_core", "ac_mlalpha_15", "over_searched", returns_format="csv"),
        e("alpha_core", "ac_macro_16", "missing_trades"),
        e("alpha_core", "ac_dividend_17", "stale_data"),
        e("alpha_core", "ac_regime_18", "unstable"),
        e("alpha_core", "ac_trend_01", "good", campaign="ac-trend-2026q3"),
        e("alpha_core", "ac_carry_02", "good", benchmark=True),
        # beta_growth: medium tier (v1: 0.6 / 0.30 / 100 trades; v2: 0.8 / 0.25 / 150 trades)
        e("beta_growth", "bg_momentum_01", "good", campaign="bg-xasset-2026q4"),
        e("beta_growth", "bg_trend_02", "good", campaign="bg-xasset-2026q4", benchmark=True),
        e("beta_growth", "bg_carry_03", "good", campaign="bg-xasset-2026q4"),
        e("beta_growth", "bg_value_04", "good", campaign="bg-xasset-2026q4", returns_format="csv"),
        e("beta_growth", "bg_defensive_05", "good", benchmark=True),
        e("beta_growth", "bg_reversal_06", "bad"),
        e("beta_growth", "bg_news_07", "bad", benchmark=True),
        e("beta_growth", "bg_calendar_08", "bad", model_card=False),
        e("beta_growth", "bg_spread_09", "policy_flip", {"sharpe": (0.7, 0.7)}),
        e("beta_growth", "bg_curve_10", "policy_flip",
          {"sharpe": (1.0, 1.0), "max_drawdown_target": (0.275, 0.275)}),
        e("beta_growth", "bg_basis_11", "borderline", {"sharpe": (0.57, 0.57)}),
        e("beta_growth", "bg_roll_12", "policy_flip",
          {"sharpe": (1.1, 1.1), "trades_per_year": None, "trades_total": (122, 128)}),
        e("beta_growth", "bg_event_13", "short_history"),
        e("beta_growth", "bg_ipo_14", "short_history", returns_format="csv"),
        e("beta_growth", "bg_commodity_15", "high_drawdown"),
        e("beta_growth", "bg_frontier_16", "illiquid"),
        e("beta_growth", "bg_microcap_17", "illiquid"),
        e("beta_growth", "bg_genetic_18", "over_searched"),
        e("beta_growth", "bg_gridsearch_19", "over_searched"),
        e("beta_growth", "bg_macro_20", "low_trades"),
        e("beta_growth", "bg_regime_21", "unstable"),
        e("beta_growth", "bg_options_22", "missing_trades"),
        e("beta_growth", "bg_dividend_23", "stale_data", model_card=False),
        e("beta_growth", "bg_momentum_01", "good", campaign="bg-xasset-2026q4"),
        e("beta_growth", "bg_defensive_05", "good", benchmark=True),
        # gamma_lab: low tier (sharpe_min 0.3, max_dd_max 0.45, 1 year, soft sample and risk)
        e("gamma_lab", "gl_trend_01", "good"),
        e("gamma_lab", "gl_carry_02", "good", returns_format="csv"),
        e("gamma_lab", "gl_meanrev_03", "good"),
        e("gamma_lab", "gl_noise_04", "bad", {"sharpe": (-0.6, 0.05)}),
        e("gamma_lab", "gl_random_05", "bad", {"sharpe": (-0.6, 0.05)}, model_card=False),
        e("gamma_lab", "gl_pairs_06", "borderline", {"sharpe": (0.32, 0.32)}),
        e("gamma_lab", "gl_intraday_07", "short_history"),
        e("gamma_lab", "gl_levered_08", "high_drawdown"),
        e("gamma_lab", "gl_exotic_09", "illiquid"),
        e("gamma_lab", "gl_bruteforce_10", "over_searched"),
        e("gamma_lab", "gl_sketch_11", "missing_trades"),
        e("gamma_lab", "gl_prototype_12", "missing_trades", returns_format="csv"),
    ]
    papers = [
        e("alpha_core", "ac_trend_01", "paper_strong"),
        e("alpha_core", "ac_carry_02", "paper_strong"),
        e("alpha_core", "ac_value_03", "paper_ok", returns_format="csv"),
        e("alpha_core", "ac_momentum_04", "paper_decay"),
        e("alpha_core", "ac_trend_01", "paper_strong"),
        e("beta_growth", "bg_momentum_01", "paper_strong"),
        e("beta_growth", "bg_trend_02", "paper_strong"),
        e("beta_growth", "bg_carry_03", "paper_ok", {"sharpe": (0.97, 0.97)}),
        e("beta_growth", "bg_value_04", "paper_decay"),
        e("gamma_lab", "gl_trend_01", "paper_strong"),
        e("gamma_lab", "gl_carry_02", "paper_strong", returns_format="csv"),
        e("gamma_lab", "gl_meanrev_03", "paper_decay"),
    ]
    return _interleave(backtests) + papers


def _interleave(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    # Round-robin over worlds, so any prefix (n_runs below the catalog size) mixes worlds and
    # archetypes; a strategy's reruns keep their relative order.
    by_world: dict[str, list[CatalogEntry]] = {}
    for entry in entries:
        by_world.setdefault(entry.world_id, []).append(entry)
    queues = [list(v) for v in by_world.values()]
    out: list[CatalogEntry] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


CATALOG: tuple[CatalogEntry, ...] = tuple(_catalog())

_UNIVERSES: dict[str, tuple[str, ...]] = {
    "us_equities": ("AAPL", "MSFT", "AMZN", "GOOGL", "META", "NVDA", "JPM", "XOM", "JNJ", "PG",
                    "V", "HD", "KO", "PEP", "CSCO", "UNH"),
    "global_futures": ("ES", "NQ", "RTY", "FESX", "FDAX", "NKD", "ZN", "ZB", "FGBL", "CL", "GC",
                       "HG", "ZC", "ZS"),
    "fx_majors": ("EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCAD", "USDCHF", "NZDUSD", "EURGBP"),
    "illiquid_small_caps": ("SMCX", "MICR", "NANO", "TINY", "FRNT", "OTCQ", "PNKS", "ZZLQ"),
}
_LIQUIDITY = {  # median ADV utilisation and bar participation; p95 ≈ 2.7 × median
    "normal": (0.012, 0.008),
    "illiquid": (0.35, 0.25),
}


# =============================================================================================
# Plain helpers: clock, durations, canonical JSON, signatures
# =============================================================================================


def resolve_clock(today: Any = None) -> tuple[dt.date, dt.datetime]:
    """``(today, now)`` for a ``today`` argument.

    None → :data:`DEFAULT_TODAY` at noon UTC; a ``date`` (or ``YYYY-MM-DD`` text) → that date at
    noon UTC; a ``datetime`` (naive = UTC) or ISO-8601 text with a time → that instant;
    ``"today"``/``"now"`` → the real UTC clock, truncated to the second.
    """
    if today is None:
        now = dt.datetime.combine(DEFAULT_TODAY, DEFAULT_CLOCK_TIME, dt.timezone.utc)
    elif isinstance(today, str) and today.strip().lower() in {"today", "now"}:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    elif isinstance(today, dt.datetime):
        now = today if today.tzinfo else today.replace(tzinfo=dt.timezone.utc)
        now = now.astimezone(dt.timezone.utc)
    elif isinstance(today, dt.date):
        now = dt.datetime.combine(today, DEFAULT_CLOCK_TIME, dt.timezone.utc)
    elif isinstance(today, str):
        text = today.strip()
        if len(text) == 10:
            now = dt.datetime.combine(dt.date.fromisoformat(text), DEFAULT_CLOCK_TIME, dt.timezone.utc)
        else:
            return resolve_clock(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    else:
        raise TypeError(f"today: expected None, a date, a datetime or text, got {type(today).__name__}")
    return now.date(), now


def iso_utc(instant: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (seconds precision, UTC)."""
    return instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_seconds(text: str | int | float) -> float:
    """Seconds in a DSL duration (``90s``, ``5m``, ``1h``, ``180d``, ``2w``; a number is seconds)."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    value, unit = text.strip()[:-1], text.strip()[-1].lower()
    if unit not in units:
        raise ValueError(f"duration {text!r}: expected <number><s|m|h|d|w>")
    return float(value) * units[unit]


def _json_bytes(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _previous_business_day(day: dt.date) -> dt.date:
    """The last business day strictly before ``day``."""
    return np.busday_offset(np.datetime64(day, "D"), -1, roll="forward").astype(dt.date)


def _business_days_ending(last: dt.date, n: int) -> np.ndarray:
    """``n`` business days (Mon–Fri) ending at ``last`` (rolled back to a business day)."""
    if n <= 0:
        return np.array([], dtype="datetime64[D]")
    end = np.busday_offset(np.datetime64(last, "D"), 0, roll="backward")
    start = np.busday_offset(end, -(n - 1), roll="backward")
    days = np.arange(start, end + np.timedelta64(1, "D"), dtype="datetime64[D]")
    return days[np.is_busday(days)]


# =============================================================================================
# Writing drops: one bundle, one snapshot
# =============================================================================================


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _frame_to_csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _returns_frame(returns: Any, last_date: dt.date) -> pd.DataFrame:
    if isinstance(returns, pd.DataFrame):
        frame = returns.copy()
        if "date" not in frame.columns:
            frame = frame.reset_index().rename(columns={frame.index.name or "index": "date"})
        return frame
    if isinstance(returns, pd.Series):
        if isinstance(returns.index, pd.DatetimeIndex):
            return pd.DataFrame({"date": returns.index, "ret": returns.to_numpy(dtype=float)})
        values = returns.to_numpy(dtype=float)
    else:
        values = np.asarray(returns, dtype=float)
    dates = _business_days_ending(last_date, len(values))
    return pd.DataFrame({"date": dates, "ret": values})


def _day_array(values: Any) -> np.ndarray:
    """Calendar days (``datetime64[D]``) from dates, datetimes or ISO text."""
    array = np.asarray(values)
    if array.dtype.kind == "M":
        return array.astype("datetime64[D]")
    return pd.to_datetime(pd.Series(values)).to_numpy(dtype="datetime64[D]")


def _utc_instant_array(values: Any) -> np.ndarray:
    """UTC instants (naive ``datetime64[us]``) from aware or naive (= UTC) datetimes or ISO text."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if not isinstance(series.dtype, pd.DatetimeTZDtype) and series.dtype.kind != "M":
        series = pd.to_datetime(series, utc=True)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy(dtype="datetime64[us]")


def _returns_table(frame: pd.DataFrame) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name in frame.columns:
        if name == "date":
            columns[name] = pa.array(_day_array(frame["date"]), type=pa.date32())
        else:
            columns[name] = pa.array(frame[name].to_numpy(dtype=float), type=pa.float64())
    return pa.table(columns)


def _trades_table(frame: pd.DataFrame) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name in frame.columns:
        series = frame[name]
        if name == "ts":
            columns[name] = pa.array(_utc_instant_array(series), type=pa.timestamp("us", tz="UTC"))
        elif series.dtype == object or pd.api.types.is_string_dtype(series):
            columns[name] = pa.array(series.astype(str).tolist(), type=pa.string())
        else:
            columns[name] = pa.array(series.to_numpy(dtype=float), type=pa.float64())
    return pa.table(columns)


def _returns_csv(frame: pd.DataFrame) -> bytes:
    out = frame.copy()
    out["date"] = np.datetime_as_string(_day_array(out["date"]), unit="D")
    return _frame_to_csv_bytes(out)


def _trades_csv(frame: pd.DataFrame) -> bytes:
    out = frame.copy()
    if "ts" in out.columns:
        out["ts"] = np.char.add(np.datetime_as_string(_utc_instant_array(out["ts"]), unit="s"), "Z")
    return _frame_to_csv_bytes(out)


def make_run_manifest(
    world_id: str,
    strategy_id: str,
    run_id: str,
    *,
    stage: str = "backtest",
    risk_tier: str | None = None,
    submitted_at: str | dt.datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A ``run.json`` document with the SPEC §3 defaults filled in.

    ``risk_tier`` defaults to the sample world's tier (``unknown`` for other worlds),
    ``submitted_at`` to noon UTC of :data:`DEFAULT_TODAY`, ``search_intensity`` to 1. Extra keyword
    arguments are copied as given (``capital=1e7``, ``trial_sharpes=[...]``, ...).
    """
    if risk_tier is None:
        risk_tier = WORLD_BY_ID[world_id].tier if world_id in WORLD_BY_ID else "unknown"
    if submitted_at is None:
        submitted_at = resolve_clock(None)[1]
    if isinstance(submitted_at, dt.datetime):
        if submitted_at.tzinfo is None:
            submitted_at = submitted_at.replace(tzinfo=dt.timezone.utc)
        submitted_at = iso_utc(submitted_at)
    run = {
        "world_id": world_id,
        "strategy_id": strategy_id,
        "run_id": run_id,
        "stage": stage,
        "risk_tier": risk_tier,
        "submitted_at": submitted_at,
        "search_intensity": 1,
    }
    run.update(fields)
    return run


def _date_arg(value: dt.date | str | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value.date() if isinstance(value, dt.datetime) else value
    return dt.date.fromisoformat(value)


def bundle_files(
    run: Mapping[str, Any],
    returns: Any,
    trades: pd.DataFrame | None = None,
    *,
    drop_date: dt.date | str | None = None,
    returns_format: str = "parquet",
    trades_format: str | None = None,
    check_ids: bool = True,
) -> list[tuple[str, bytes]]:
    """The files of one run bundle as ``(landing key, bytes)`` pairs, ``run.json`` last.

    ``run`` is the ``run.json`` document (see :func:`make_run_manifest`); its ``world_id``,
    ``strategy_id`` and ``run_id`` place the bundle. ``returns`` is a DataFrame with ``date`` and
    ``ret`` (optionally ``benchmark_ret``), a Series with a date index, or plain values (dated on the
    business days ending the day before the drop). ``drop_date`` defaults to the date of
    ``submitted_at`` (else :data:`DEFAULT_TODAY`). ``check_ids=False`` writes identifiers as given,
    so tests can produce bad drops.
    """
    ids = [str(run.get(k, "")) for k in ("world_id", "strategy_id", "run_id")]
    if check_ids:
        for name, value in zip(("world_id", "strategy_id", "run_id"), ids):
            check_identifier(value, name)
    drop = _date_arg(drop_date)
    if drop is None:
        submitted = run.get("submitted_at")
        drop = resolve_clock(submitted)[0] if isinstance(submitted, str) else DEFAULT_TODAY
    frame = _returns_frame(returns, _previous_business_day(drop))
    prefix = f"runs/{drop.isoformat()}/{ids[0]}/{ids[1]}/{ids[2]}"
    files: list[tuple[str, bytes]] = []
    if returns_format == "parquet":
        files.append((f"{prefix}/returns.parquet", _parquet_bytes(_returns_table(frame))))
    elif returns_format == "csv":
        files.append((f"{prefix}/returns.csv", _returns_csv(frame)))
    else:
        raise ValueError(f"returns_format: expected parquet or csv, got {returns_format!r}")
    if trades is not None:
        fmt = trades_format or returns_format
        if fmt == "parquet":
            files.append((f"{prefix}/trades.parquet", _parquet_bytes(_trades_table(trades))))
        elif fmt == "csv":
            files.append((f"{prefix}/trades.csv", _trades_csv(trades)))
        else:
            raise ValueError(f"trades_format: expected parquet or csv, got {fmt!r}")
    files.append((f"{prefix}/run.json", _json_bytes(dict(run))))
    return files


def _write_files(root: Path, files: Iterable[tuple[str, bytes]]) -> list[Path]:
    """Write each file atomically (temp file in the same folder, then rename), in order."""
    base = root.resolve()
    written = []
    for key, data in files:
        target = (base / key).resolve()
        if base != target and base not in target.parents:
            raise ValueError(f"{key!r} would be written outside the landing root {base}")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def write_bundle(
    root: str | os.PathLike[str],
    run: Mapping[str, Any],
    returns: Any,
    trades: pd.DataFrame | None = None,
    *,
    drop_date: dt.date | str | None = None,
    returns_format: str = "parquet",
    trades_format: str | None = None,
    check_ids: bool = True,
) -> Path:
    """Drop one run bundle into the landing zone at ``root``; return the bundle folder.

    Arguments as :func:`bundle_files`. Files are written atomically and ``run.json`` last, so a
    sensor never sees a half-written bundle. Nothing is ever written outside ``root``.
    """
    files = bundle_files(
        run, returns, trades, drop_date=drop_date, returns_format=returns_format,
        trades_format=trades_format, check_ids=check_ids,
    )
    return _write_files(Path(root), files)[-1].parent


def snapshot_files(
    payload: Mapping[str, Any],
    *,
    drop_date: dt.date | str | None = None,
    signing_key: str | bytes | None = None,
    with_hash: bool = False,
    as_refs: bool = False,
    check_ids: bool = True,
) -> list[tuple[str, bytes]]:
    """The files of one risk snapshot as ``(landing key, bytes)`` pairs, the JSON last.

    ``drop_date`` defaults to the date of ``as_of``. ``as_refs`` moves ``covariance`` into
    ``<version>.covariance.parquet`` (columns ``strategy_a, strategy_b, covariance``: the long
    layout ``core.snapshot.parse_covariance`` reads) and ``realized_returns`` into
    ``<version>.realized.parquet`` (long form ``date, strategy_id, ret``; the series end on the
    business day before ``as_of``) beside the JSON, which then carries ``covariance_ref`` /
    ``realized_returns_ref`` (file names relative to its folder). ``signing_key`` adds
    ``signature`` and ``with_hash`` adds ``hash`` (both over the final payload, refs included).
    """
    document = json.loads(json.dumps(payload))  # a deep copy in plain JSON types
    world_id = str(document.get("world_id", ""))
    version = str(document.get("version", ""))
    if check_ids:
        check_identifier(world_id, "world_id")
        check_identifier(version, "version")
    as_of_date, _ = resolve_clock(document["as_of"]) if document.get("as_of") else (DEFAULT_TODAY, None)
    drop = _date_arg(drop_date) or as_of_date
    prefix = f"snapshots/{drop.isoformat()}/{world_id}"
    files: list[tuple[str, bytes]] = []
    if as_refs and "covariance" in document:
        pairs = [key.split(",", 1) for key in document["covariance"]]
        table = pa.table({
            "strategy_a": pa.array([p[0] for p in pairs], type=pa.string()),
            "strategy_b": pa.array([p[1] for p in pairs], type=pa.string()),
            "covariance": pa.array(list(document.pop("covariance").values()), type=pa.float64()),
        })
        name = f"{version}.covariance.parquet"
        files.append((f"{prefix}/{name}", _parquet_bytes(table)))
        document["covariance_ref"] = name
    if as_refs and isinstance(document.get("realized_returns"), Mapping):
        realized = document.pop("realized_returns")
        last = _previous_business_day(as_of_date)
        strategies, dates, values = [], [], []
        for strategy_id in sorted(realized):
            series = np.asarray(realized[strategy_id], dtype=float)
            strategies.extend([strategy_id] * len(series))
            dates.append(_business_days_ending(last, len(series)))
            values.append(series)
        table = pa.table({
            "date": pa.array(np.concatenate(dates), type=pa.date32()),
            "strategy_id": pa.array(strategies, type=pa.string()),
            "ret": pa.array(np.concatenate(values), type=pa.float64()),
        })
        name = f"{version}.realized.parquet"
        files.append((f"{prefix}/{name}", _parquet_bytes(table)))
        document["realized_returns_ref"] = name
    document.pop("signature", None)
    document.pop("hash", None)
    if signing_key is not None:
        document["signature"] = sign_snapshot(document, signing_key)
    if with_hash:
        document["hash"] = snapshot_hash(document)
    files.append((f"{prefix}/{version}.json", _json_bytes(document)))
    return files


def write_snapshot(
    root: str | os.PathLike[str],
    payload: Mapping[str, Any],
    *,
    drop_date: dt.date | str | None = None,
    signing_key: str | bytes | None = None,
    with_hash: bool = False,
    as_refs: bool = False,
    check_ids: bool = True,
) -> Path:
    """Drop one risk snapshot into the landing zone at ``root``; return the JSON's path.

    Arguments as :func:`snapshot_files`; parquet files beside the JSON are written first.
    """
    files = snapshot_files(
        payload, drop_date=drop_date, signing_key=signing_key, with_hash=with_hash,
        as_refs=as_refs, check_ids=check_ids,
    )
    return _write_files(Path(root), files)[-1]


# =============================================================================================
# Drawing returns and trades (numpy, vectorised over periods)
# =============================================================================================


def _clustered_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-scale noise with volatility clustering and fat tails.

    Log-volatility is an AR(1) (persistence 0.98, stationary sd ≈ 0.4), computed as a convolution
    with the AR kernel truncated where it falls below 1e-4; shocks are Student-t(5) scaled to unit
    variance. This is the stochastic-volatility cousin of GARCH: quiet and turbulent spells, so the
    20-day rolling-vol terciles of a run are genuinely different regimes.
    """
    persistence, vol_of_vol = 0.98, 0.08
    kernel = persistence ** np.arange(_AR_KERNEL_LENGTH)
    innovations = vol_of_vol * rng.standard_normal(n + _AR_KERNEL_LENGTH)
    log_vol = np.convolve(innovations, kernel, mode="valid")[1:]
    shocks = rng.standard_t(5, size=n) / math.sqrt(5.0 / 3.0)
    return np.exp(log_vol) * shocks


def _segment_bounds(n: int) -> np.ndarray:
    """Start indices of the segments that refine both halves and five contiguous folds."""
    folds = np.cumsum([len(part) for part in np.array_split(np.arange(n), 5)])[:-1]
    return np.unique(np.concatenate([[0, n // 2], folds]))


def _shape_segments(x: np.ndarray, targets_pp: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Give each segment the per-period Sharpe ``targets_pp[i]`` (keeping its shape and vol)."""
    lengths = np.diff(np.append(bounds, len(x)))
    seg = np.repeat(np.arange(len(bounds)), lengths)
    means = np.add.reduceat(x, bounds) / lengths
    centred = x - means[seg]
    stds = np.sqrt(np.add.reduceat(centred**2, bounds) / np.maximum(lengths - 1, 1))
    return centred + (targets_pp * stds)[seg]


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std(ddof=1)


def _max_drawdown(ret: np.ndarray) -> float:
    equity = np.cumprod(1.0 + ret)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    return float(np.max(1.0 - equity / peak))


def _returns_for(z: np.ndarray, sharpe_pp: float, vol: float) -> np.ndarray:
    # z is standardised, so the sample mean is sharpe_pp·vol and the sample std (ddof=1) is vol.
    return vol * (sharpe_pp + z)


def _vol_for_drawdown(z: np.ndarray, sharpe_pp: float, target: float) -> float | None:
    """Daily vol at which the series reaches max drawdown ``target`` (bisection), or None."""
    lo, hi = 0.001, 0.06
    if _max_drawdown(_returns_for(z, sharpe_pp, hi)) < target:
        return None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _max_drawdown(_returns_for(z, sharpe_pp, mid)) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def _draw_trades(
    rng: np.random.Generator,
    dates: np.ndarray,
    n_trades: int,
    capital: float,
    universe: Sequence[str],
    liquidity: str,
) -> pd.DataFrame:
    """A trades log of ``n_trades`` executions spread over ``dates`` (US session hours, UTC)."""
    day_index = np.sort(rng.integers(0, len(dates), n_trades))
    seconds = rng.integers(13 * 3600 + 30 * 60, 20 * 3600, n_trades)
    ts = dates[day_index].astype("datetime64[s]") + seconds.astype("timedelta64[s]")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    symbol_index = rng.integers(0, len(universe), n_trades)
    base_price = np.round(np.exp(rng.normal(math.log(80.0), 0.8, len(universe))), 2) + 1.0
    drift = np.linspace(0.0, 0.15, n_trades)
    price = np.round(base_price[symbol_index] * np.exp(drift + rng.normal(0, 0.03, n_trades)), 2)
    target_notional = capital * np.exp(rng.normal(math.log(0.02), 0.5, n_trades))
    qty = np.maximum(1.0, np.round(target_notional / price))
    notional = np.round(qty * price, 2)
    util_median, part_median = _LIQUIDITY[liquidity]
    utilisation = np.exp(rng.normal(math.log(util_median), 0.6, n_trades))
    participation = np.exp(rng.normal(math.log(part_median), 0.6, n_trades))
    return pd.DataFrame({
        "ts": pd.to_datetime(ts).tz_localize("UTC"),
        "symbol": np.asarray(universe, dtype=object)[symbol_index],
        "side": np.where(rng.random(n_trades) < 0.5, "buy", "sell").astype(object),
        "qty": qty,
        "price": price,
        "notional": notional,
        "adv_notional": np.round(notional / utilisation, 0),
        "bar_volume": np.ceil(qty / participation),
    })


# =============================================================================================
# Metrics and expected outcomes (the manifest's ground truth)
# =============================================================================================


def _sharpe(ret: np.ndarray) -> float:
    return float(ret.mean() / ret.std(ddof=1) * math.sqrt(PERIODS_PER_YEAR))


def _deflated_sharpe(
    sr: float, n: int, skew: float, kurt: float, n_trials: int, variance: float | None
) -> float:
    """Bailey & López de Prado DSR on per-period Sharpe ``sr``, non-excess kurtosis (SPEC §5)."""
    sigma = math.sqrt(max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr, 1e-12) / (n - 1))
    if n_trials <= 1:
        sr0 = 0.0
    else:
        v = sigma * sigma if variance is None else variance
        sr0 = math.sqrt(v) * (
            (1 - _EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n_trials)
            + _EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n_trials * math.e))
        )
    return float(_NORMAL.cdf((sr - sr0) / sigma))


def manifest_metrics(
    ret: np.ndarray,
    dates: np.ndarray,
    trades: pd.DataFrame | None,
    run: Mapping[str, Any],
    *,
    campaign_size: int = 1,
) -> dict[str, Any]:
    """The metrics the manifest's expectations rest on (SPEC §5 definitions, P = 252).

    A list value holds every plausible reading of a metric, and the manifest's verdict must not
    depend on which one an engine takes: ``deflated_sharpe_ratio`` under each trial count (the
    run's own ``search_intensity``/``trial_sharpes``, and that raised to the campaign size);
    ``data_lag_days`` from the end / the start of the last return date to ``submitted_at``;
    ``history_days`` as the calendar span of the returns with and without the last day.
    """
    n = len(ret)
    sharpe = _sharpe(ret)
    half = n // 2
    first, second = _sharpe(ret[:half]), _sharpe(ret[half:])
    losses = ret[ret < 0].sum()
    centred = ret - ret.mean()
    m2 = (centred**2).mean()
    skew = float((centred**3).mean() / m2**1.5 * math.sqrt(n * (n - 1)) / (n - 2))
    excess = float(
        ((n + 1) * ((centred**4).mean() / m2**2) - 3 * (n - 1)) * (n - 1) / ((n - 2) * (n - 3))
    )
    sr_pp = float(ret.mean() / ret.std(ddof=1))
    trials = run.get("trial_sharpes") or []
    n_base = max(int(run.get("search_intensity") or 1), len(trials))
    variance = float(np.var(trials, ddof=1)) if len(trials) >= 2 else None
    dsr = sorted({
        round(_deflated_sharpe(sr_pp, n, skew, excess + 3.0, trial_count, variance), 12)
        for trial_count in {n_base, max(n_base, campaign_size)}
    })
    submitted = resolve_clock(run["submitted_at"])[1]
    last = dt.datetime.combine(dates[-1].astype(dt.date), dt.time(0), dt.timezone.utc)
    lag_days = (submitted - last).total_seconds() / 86400.0
    span_days = float((dates[-1] - dates[0]).astype(int))
    out: dict[str, Any] = {
        "n_periods": n,
        "effective_history_years": n / PERIODS_PER_YEAR,
        # Both readings of a daily date (its midnight, or its whole day) must give one verdict.
        "history_days": [span_days, span_days + 1.0],
        "data_lag_days": [lag_days - 1.0, lag_days],
        "sharpe": sharpe,
        "max_drawdown": _max_drawdown(ret),
        "gain_to_pain_ratio": float(ret.sum() / abs(losses)) if losses < 0 else None,
        "sharpe_first_half": first,
        "sharpe_second_half": second,
        "sharpe_half_gap": abs(first - second),
        "deflated_sharpe_ratio": dsr,
        "n_trades_total": None,
        "adv_utilization_p95": None,
        "participation_rate_p95": None,
        "capacity_estimate_base": None,
        "incremental_var_99": None,
    }
    if trades is not None and len(trades):
        adv = float(np.percentile(np.abs(trades["notional"]) / trades["adv_notional"], 95))
        out.update({
            "n_trades_total": int(len(trades)),
            "adv_utilization_p95": adv,
            "participation_rate_p95": float(
                np.percentile(np.abs(trades["qty"]) / trades["bar_volume"], 95)
            ),
            "capacity_estimate_base": float(run["capital"]) * 0.1 / adv if run.get("capital") else None,
        })
    return out


_PROFILE_CHECKS: tuple[tuple[str, str, str, str], ...] = (
    # (profile section, key, metric, bound kind)
    ("data_currency", "max_lag", "data_lag_days", "max"),
    ("data_currency", "min_history", "history_days", "min"),
    ("sample", "min_effective_years", "effective_history_years", "min"),
    ("sample", "min_trades_total", "n_trades_total", "min"),
    ("performance", "sharpe_min", "sharpe", "min"),
    ("performance", "max_dd_max", "max_drawdown", "max"),
    ("performance", "gain_to_pain_min", "gain_to_pain_ratio", "min"),
    ("robustness", "dsr_min", "deflated_sharpe_ratio", "min"),
    ("robustness", "cv_sharpe_gap_max", "sharpe_half_gap", "max"),
    ("risk", "adv_utilization_p95_max", "adv_utilization_p95", "max"),
    ("risk", "participation_rate_p95_max", "participation_rate_p95", "max"),
    ("risk", "capacity_estimate_base_min", "capacity_estimate_base", "min"),
    # Known only once a risk snapshot has been applied: missing at the core evaluation.
    ("risk", "incremental_var_99_max", "incremental_var_99", "max"),
)
_RULE_OF_SECTION = {
    "data_currency": "data_currency",
    "sample": "sample",
    "performance": "performance",
    "robustness": "robustness",
    "risk": "risk_constraint",
}
_SELECTION_METRICS = {
    "sharpe": ("sharpe", "performance"),
    "returns.sharpe": ("sharpe", "performance"),
    "max_drawdown": ("max_drawdown", "performance"),
    "returns.max_drawdown": ("max_drawdown", "performance"),
}


def _profile_for_stage(policy: Mapping[str, Any], stage: str) -> str | None:
    profiles = policy.get("validation_profiles") or {}
    mapping = policy.get("default_profile_by_stage") or {}
    for candidate in (mapping.get(stage), mapping.get(f"{stage}_only"), stage):
        if candidate in profiles:
            return candidate
    return None


def _threshold_value(section: str, key: str, raw: Any) -> float:
    if section == "data_currency":
        return duration_seconds(raw) / 86400.0
    return float(raw)


def _profile_outcome(
    metrics: Mapping[str, Any], policy: Mapping[str, Any], profile_name: str | None, world: WorldSpec
) -> tuple[dict[str, str], list[str]]:
    """Core-rule statuses under one profile, and the metrics that sit on a knife edge."""
    profile = (policy.get("validation_profiles") or {}).get(profile_name) or {}
    mode = (policy.get("validation") or {}).get("on_missing_metric", "fail")
    if world.tier == "high" and world.client_critical:
        mode = "fail"
    statuses = dict.fromkeys(CORE_RULES, "pass")
    edges: list[str] = []

    def escalate(rule: str, status: str) -> None:
        order = {"pass": 0, "warn": 1, "fail": 2}
        if order[status] > order[statuses[rule]]:
            statuses[rule] = status

    def check(rule: str, metric: str, kind: str, bound: float) -> None:
        value = metrics.get(metric)
        if value is None:
            if mode != "ignore":
                escalate(rule, "fail" if mode == "fail" else "warn")
            return
        values = value if isinstance(value, list) else [value]
        passes = {v >= bound if kind == "min" else v <= bound for v in values}
        if len(passes) > 1:
            edges.append(metric)
        if metric == "deflated_sharpe_ratio":
            tolerance = _KNIFE_EDGE_DSR
        else:
            tolerance = _KNIFE_EDGE * max(abs(bound), 1e-9)
        if any(abs(v - bound) < tolerance for v in values):
            edges.append(metric)
        if not all(passes):
            escalate(rule, "fail")

    for section, key, metric, kind in _PROFILE_CHECKS:
        raw = (profile.get(section) or {}).get(key)
        if raw is not None:
            check(_RULE_OF_SECTION[section], metric, kind, _threshold_value(section, key, raw))
    selection = policy.get("selection") or {}
    thresholds = dict(policy.get("thresholds") or {})
    thresholds.update(selection.get("thresholds") or {})
    for spec in thresholds.values():
        metric, rule = _SELECTION_METRICS[spec["metric"]]
        if spec.get("min") is not None:
            check(rule, metric, "min", float(spec["min"]))
        if spec.get("max") is not None:
            check(rule, metric, "max", float(spec["max"]))
    hysteresis = selection.get("hysteresis") or policy.get("hysteresis")
    if hysteresis:
        # A run not previously active must reach `enter` (SPEC §7).
        metric = _SELECTION_METRICS[hysteresis["metric"]][0]
        check("risk_constraint", metric, "min", float(hysteresis["enter"]))
    return statuses, edges


def _severities(policy: Mapping[str, Any], profile_name: str | None, world: WorldSpec) -> dict[str, str]:
    severities = dict.fromkeys(CORE_RULES, "blocking")
    severities["robustness"] = "blocking" if world.tier == "high" else "soft"
    profile = (policy.get("validation_profiles") or {}).get(profile_name) or {}
    for section, rule in _RULE_OF_SECTION.items():
        severity = (profile.get(section) or {}).get("severity")
        if severity:
            severities[rule] = severity
    return severities


def expected_outcome(
    metrics: Mapping[str, Any], policy: Mapping[str, Any], stage: str, world: WorldSpec
) -> tuple[dict[str, Any], list[str]]:
    """The expected core-rule outcome of a run under one policy version (SPEC §7 semantics).

    Returns ``({"profile", "status", "rule_status", "failing_rules", "warning_rules",
    "recommended_stage"}, knife_edge_metrics)``.
    """
    profile = _profile_for_stage(policy, stage)
    statuses, edges = _profile_outcome(metrics, policy, profile, world)
    severities = _severities(policy, profile, world)
    if any(statuses[r] == "fail" and severities[r] == "blocking" for r in CORE_RULES):
        status = "fail"
    elif any(s != "pass" for s in statuses.values()):
        status = "warn"
    else:
        status = "pass"

    def clears(profile_name: str | None) -> bool:
        if profile_name is None:
            return False
        profile_statuses, profile_edges = _profile_outcome(metrics, policy, profile_name, world)
        edges.extend(profile_edges)
        return all(s != "fail" for s in profile_statuses.values())

    if stage == "backtest":
        recommended = "paper_only" if clears(profile) else "backtest_only"
    else:
        live = _profile_for_stage(policy, "live")
        if clears(live if live is not None else profile):
            recommended = "paper_ok_live_candidate"
        elif live is not None and clears(profile):
            recommended = "paper_only"
        else:
            recommended = "backtest_only"
    outcome = {
        "profile": profile,
        "status": status,
        "rule_status": statuses,
        "failing_rules": [r for r in CORE_RULES if statuses[r] == "fail"],
        "warning_rules": [r for r in CORE_RULES if statuses[r] == "warn"],
        "recommended_stage": recommended,
    }
    return outcome, sorted(set(edges))


def _acceptable(
    archetype: Archetype,
    outcomes: Mapping[int, Mapping[str, Any]],
    edges: Sequence[str],
    policies: Mapping[int, Mapping[str, Any]],
) -> bool:
    """Does a draw look like its archetype, with no verdict hanging on a knife edge?"""
    if edges:
        return False
    first_version = min(outcomes)
    first = outcomes[first_version]
    rule_status = first["rule_status"]
    # A must-fail rule only binds where the world configures it (gamma_lab has no data_currency).
    configured = _configured_rules(policies[first_version], first["profile"])
    if any(rule_status[r] != "fail" for r in archetype.must_fail & configured):
        return False
    if any(rule_status[r] == "fail" for r in archetype.must_pass):
        return False
    if archetype.flips and outcomes[max(outcomes)]["status"] == first["status"]:
        return False
    if archetype.clears == "live" and first["recommended_stage"] != "paper_ok_live_candidate":
        return False
    if archetype.clears == "paper" and first["recommended_stage"] != "paper_only":
        return False
    return True


def _configured_rules(policy: Mapping[str, Any], profile_name: str | None) -> set[str]:
    profile = (policy.get("validation_profiles") or {}).get(profile_name) or {}
    return {_RULE_OF_SECTION[s] for s in profile if s in _RULE_OF_SECTION}


# =============================================================================================
# Bundle generation
# =============================================================================================


@dataclass(frozen=True)
class BundlePlan:
    """One bundle to draw: a catalog entry placed in a repetition."""

    index: int
    repetition: int
    entry: CatalogEntry
    strategy_id: str
    archetype: Archetype
    campaign_id: str | None


def _plan(n_runs: int | None) -> list[BundlePlan]:
    size = len(CATALOG)
    total = size if n_runs is None else int(n_runs)
    if total < 0:
        raise ValueError("n_runs must be >= 0")
    plans = []
    for position in range(total):
        repetition, index = divmod(position, size)
        entry = CATALOG[index]
        suffix = "" if repetition == 0 else f"_r{repetition:04d}"
        archetype = replace(ARCHETYPES[entry.archetype], **dict(entry.overrides))
        campaign = entry.campaign
        if campaign is None and archetype.stage == "backtest":
            campaign = f"{entry.strategy_id}-research"
        plans.append(BundlePlan(
            index=index,
            repetition=repetition,
            entry=entry,
            strategy_id=entry.strategy_id + suffix,
            archetype=archetype,
            campaign_id=None if campaign is None else campaign + suffix,
        ))
    return plans


def _model_card_version(strategy_index: int) -> str:
    return f"{1 + strategy_index % 3}.{strategy_index % 4}.0"


@dataclass
class GeneratedBundle:
    plan: BundlePlan
    run: dict[str, Any]
    drop_date: dt.date
    returns: pd.DataFrame
    trades: pd.DataFrame | None
    metrics: dict[str, Any]
    expected: dict[int, dict[str, Any]]
    attempts: int


def _draw_bundle(
    plan: BundlePlan,
    seed: int,
    today: dt.date,
    now: dt.datetime,
    campaign_sizes: Mapping[str, int],
    card_versions: Mapping[str, str],
) -> GeneratedBundle:
    world = WORLD_BY_ID[plan.entry.world_id]
    policies = world_policies(world.world_id)
    arch = plan.archetype
    rng = np.random.default_rng(np.random.SeedSequence([seed, plan.repetition, plan.index]))

    # Identity and timing: drawn once, so redraws only change the numbers.
    days_ago = int(rng.integers(0, 3) if arch.stage == "paper" else rng.integers(3, 10))
    drop = today - dt.timedelta(days=days_ago)
    window_start = dt.datetime.combine(drop, dt.time(6, 0), dt.timezone.utc)
    window_end = dt.datetime.combine(drop, dt.time(21, 0), dt.timezone.utc)
    if drop == today:  # never submitted after the reference clock
        window_start = dt.datetime.combine(drop, dt.time(0, 0), dt.timezone.utc)
        window_end = max(window_start, min(window_end, now - dt.timedelta(minutes=5)))
    span = (window_end - window_start).total_seconds()
    submitted = window_start + dt.timedelta(seconds=int(rng.random() * span))
    last_date = _previous_business_day(drop)
    if arch.stale_days:
        last_date = _previous_business_day(drop - dt.timedelta(days=int(rng.integers(*arch.stale_days))))
    stage_code = "bt" if arch.stage == "backtest" else "pp"
    run_id = f"{stage_code}-{drop:%Y%m%d}-{int(rng.integers(0, 16**8)):08x}"
    capital = float(round(_uniform(rng, arch.capital), -5))
    universe_name = "illiquid_small_caps" if arch.liquidity == "illiquid" else world.universe
    universe = _UNIVERSES[universe_name]

    for attempt in range(1, _MAX_ATTEMPTS + 1):
        years = _uniform(rng, arch.years)
        n = max(30, int(round(years * PERIODS_PER_YEAR)))
        dates = _business_days_ending(last_date, n)
        sharpe = _uniform(rng, arch.sharpe)
        sharpe_pp = sharpe / math.sqrt(PERIODS_PER_YEAR)
        own = _clustered_noise(rng, n)
        benchmark = None
        if plan.entry.benchmark:
            bench_z = _standardise(_clustered_noise(rng, n))
            rho = float(rng.uniform(0.2, 0.5))
            own = rho * bench_z + math.sqrt(1 - rho * rho) * _standardise(own)
            benchmark = np.round(_returns_for(bench_z, 0.5 / math.sqrt(PERIODS_PER_YEAR), 0.011), 10)
        if arch.crash:
            length = int(rng.integers(20, 35))
            start = int(rng.integers(n // 5, n - length - n // 5))
            own = _standardise(own)
            own[start : start + length] -= 2.2
        bounds = _segment_bounds(n)
        if arch.half_sharpes:
            halves = np.where(bounds < n // 2, arch.half_sharpes[0], arch.half_sharpes[1])
            targets = halves / math.sqrt(PERIODS_PER_YEAR)
        else:
            jitter = rng.uniform(-0.1, 0.1, len(bounds))
            targets = (sharpe + jitter) / math.sqrt(PERIODS_PER_YEAR)
        z = _standardise(_shape_segments(own, targets, bounds))
        if arch.max_drawdown_target:
            vol = _vol_for_drawdown(z, sharpe_pp, _uniform(rng, arch.max_drawdown_target))
            if vol is None:
                continue
        else:
            vol = _uniform(rng, arch.vol)
        ret = np.round(_returns_for(z, sharpe_pp, vol), 10)
        if not (np.all(np.isfinite(ret)) and ret.min() > -0.5):
            continue

        trades = None
        if arch.trades_per_year is not None or arch.trades_total is not None:
            if arch.trades_total is not None:
                n_trades = int(rng.integers(arch.trades_total[0], arch.trades_total[1] + 1))
            else:
                n_trades = max(5, int(round(_uniform(rng, arch.trades_per_year) * n / PERIODS_PER_YEAR)))
            trades = _draw_trades(rng, dates, n_trades, capital, universe, arch.liquidity)

        search = int(rng.integers(arch.search_intensity[0], arch.search_intensity[1] + 1))
        trial_sharpes = None
        if arch.trial_dispersion is not None:
            trials = rng.normal(0.0, arch.trial_dispersion, search)
        elif search >= 3 and rng.random() < 0.5:
            trials = rng.normal(0.6 * sharpe_pp, 0.15 * abs(sharpe_pp) + 0.005, search)
        else:
            trials = None
        if trials is not None:
            # The submitted run is the best variant of its search.
            actual_pp = float(ret.mean() / ret.std(ddof=1))
            trials = np.minimum(trials, actual_pp)
            trials[int(np.argmax(trials))] = actual_pp
            trial_sharpes = [round(float(t), 8) for t in trials]

        run = _run_document(plan, world, run_id, submitted, capital, search, trial_sharpes,
                            universe_name, card_versions, rng)
        metrics = manifest_metrics(
            ret, dates, trades, run,
            campaign_size=campaign_sizes.get(plan.campaign_id or "", 1),
        )
        expected: dict[int, dict[str, Any]] = {}
        edges: list[str] = []
        for version, policy in policies.items():
            outcome, version_edges = expected_outcome(metrics, policy, arch.stage, world)
            expected[version] = outcome
            edges.extend(version_edges)
        if _acceptable(arch, expected, edges, policies):
            frame = pd.DataFrame({"date": dates, "ret": ret})
            if benchmark is not None:
                frame["benchmark_ret"] = benchmark
            return GeneratedBundle(plan, run, drop, frame, trades, metrics, expected, attempt)
    raise RuntimeError(
        f"could not draw a {arch.name!r} bundle for {plan.strategy_id} in {world.world_id} "
        f"after {_MAX_ATTEMPTS} attempts; the archetype and the world's thresholds disagree"
    )


def _run_document(
    plan: BundlePlan,
    world: WorldSpec,
    run_id: str,
    submitted: dt.datetime,
    capital: float,
    search: int,
    trial_sharpes: list[float] | None,
    universe_name: str,
    card_versions: Mapping[str, str],
    rng: np.random.Generator,
) -> dict[str, Any]:
    arch = plan.archetype
    fields: dict[str, Any] = {
        "campaign_id": plan.campaign_id,
        "capital": capital,
        "complexity": {
            "n_parameters": int(rng.integers(3, 12)) + (25 if arch.name == "over_searched" else 0),
            "n_features": int(rng.integers(2, 10)) + (30 if arch.name == "over_searched" else 0),
        },
        "returns_source": "backtester/v3" if arch.stage == "backtest" else "paper-gateway/v2",
        "search_intensity": search,
        "extra_metrics": {
            "turnover_annual": round(float(rng.uniform(2.0, 40.0)), 2),
            "avg_holding_days": round(float(rng.uniform(1.0, 30.0)), 1),
            "universe": universe_name,
        },
    }
    if trial_sharpes is not None:
        fields["trial_sharpes"] = trial_sharpes
    card_version = card_versions.get(plan.strategy_id)
    if card_version is not None:
        # One run cites a card version its card does not have (the report shows the mismatch).
        mismatch = plan.entry.strategy_id == "ac_quality_05"
        fields["model_card_version"] = "0.9.0" if mismatch else card_version
    return make_run_manifest(
        world.world_id, plan.strategy_id, run_id, stage=arch.stage, risk_tier=world.tier,
        submitted_at=submitted, **fields,
    )


# =============================================================================================
# Model cards
# =============================================================================================

_STYLE_TEXT = {
    "trend": "follows medium-term price trends",
    "carry": "harvests carry across instruments",
    "value": "buys cheap and sells expensive on fundamentals",
    "momentum": "ranks instruments by 12-1 month momentum",
    "quality": "prefers profitable, low-leverage issuers",
    "lowvol": "overweights low-volatility names",
    "meanrev": "fades short-term dislocations",
    "defensive": "rotates into defensive assets in drawdowns",
}


def _model_card(strategy_id: str, world: WorldSpec, version: str, archetype: str) -> str:
    style = strategy_id.split("_")[1] if "_" in strategy_id else "systematic"
    behaviour = _STYLE_TEXT.get(style, f"runs a {style} signal")
    card = {
        "strategy_id": strategy_id,
        "model_card_version": version,
        "objective": f"A {world.universe.replace('_', ' ')} strategy that {behaviour}.",
        "data_overview": [
            f"Daily bars of the {world.universe.replace('_', ' ')} universe.",
            "Corporate actions and roll adjustments from the vendor master file.",
        ],
        "key_assumptions": [
            "Execution at the next session's VWAP with 2 bps cost.",
            "Signals are computed from data available at the previous close.",
        ],
        "key_limitations": [
            "Capacity is limited by the least liquid names in the universe.",
            "Backtest excludes borrow costs." if archetype != "over_searched"
            else "Parameters were selected from a large search; out-of-sample evidence is thin.",
        ],
        "owner": f"{world.world_id.split('_')[0]}-research",
        "universe": world.universe,
    }
    return yaml.safe_dump(card, sort_keys=False, default_flow_style=False, width=100)


# =============================================================================================
# Risk snapshots
# =============================================================================================


def _snapshot_payloads(
    world: WorldSpec,
    strategies: Sequence[str],
    backtest_sharpes: Mapping[str, float],
    decaying: Sequence[str],
    seed: int,
    now: dt.datetime,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``[(payload, manifest notes)]`` for one world, oldest first."""
    world_index = [w.world_id for w in WORLDS].index(world.world_id)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 10_000 + world_index]))
    k = world.snapshot_count
    ids = sorted(strategies)
    m = len(ids)
    vols = rng.uniform(0.005, 0.012, m)
    loadings = rng.uniform(-0.2, 0.6, (m, 2))
    loadings *= np.minimum(1.0, 0.85 / np.linalg.norm(loadings, axis=1))[:, None]
    corr = loadings @ loadings.T
    np.fill_diagonal(corr, 1.0)
    missing: set[tuple[str, str]] = set()
    if world.missing_pairs:
        upper = [(i, j) for i in range(m) for j in range(i + 1, m)]
        chosen = rng.choice(len(upper), size=world.missing_pairs, replace=False)
        missing = {(ids[upper[c][0]], ids[upper[c][1]]) for c in sorted(chosen)}
    base_weights = rng.dirichlet(np.full(m, 4.0))
    length = 120 + k - 1
    realized_full: dict[str, np.ndarray] = {}
    for position, strategy_id in enumerate(ids):
        sharpe = -2.5 if strategy_id in decaying else 0.8 * backtest_sharpes.get(strategy_id, 1.0)
        z = _standardise(_clustered_noise(rng, length))
        realized_full[strategy_id] = np.round(
            _returns_for(z, sharpe / math.sqrt(PERIODS_PER_YEAR), float(vols[position])), 10
        )
    latest = now - world.latest_snapshot_lag
    out = []
    for j in range(k):
        as_of = latest - (k - 1 - j) * world.snapshot_spacing
        version = f"v{j + 1:04d}"
        raw = base_weights * np.exp(rng.normal(0, 0.05, m))
        rounded = np.round(raw / raw.sum(), 6)
        weights = {sid: float(w) for sid, w in zip(ids[:-1], rounded[:-1])}
        weights[ids[-1]] = float(round(1.0 - sum(weights.values()), 12))
        scale = np.exp(rng.normal(0, 0.03, m))
        cov_matrix = np.outer(vols * scale, vols * scale) * corr
        covariance = {
            f"{ids[a]},{ids[b]}": float(cov_matrix[a, b])
            for a in range(m)
            for b in range(a, m)
            if (ids[a], ids[b]) not in missing
        }
        crash_dd = float(rng.uniform(0.18, 0.26))
        if world.stress_breach and j == k - 1:
            crash_dd = 0.38  # above beta_growth's crash_2008 dd_max of 0.35
        stress = {
            "crash_2008": _stress_entry(rng, crash_dd, (0.035, 0.05)),
            "rates_shock": _stress_entry(rng, float(rng.uniform(0.06, 0.12)), (0.015, 0.025)),
            "covid_2020": _stress_entry(rng, float(rng.uniform(0.12, 0.2)), (0.03, 0.045)),
        }
        payload = {
            "world_id": world.world_id,
            "as_of": iso_utc(as_of),
            "version": version,
            "weights": weights,
            "covariance": covariance,
            "realized_returns": {sid: [float(v) for v in realized_full[sid][j : j + 120]] for sid in ids},
            "stress": stress,
            "constraints": dict(world.constraints),
            "provenance": {
                "actor": world.actor,
                "stage": world.provenance_stage,
                "source": f"{world.actor}/portfolio-v3",
            },
            "ttl_sec": world.ttl_sec,
        }
        notes = {
            "as_refs": bool(world.ref_form_latest and j == k - 1),
            "signed": world.signed,
            "missing_pairs": sorted(f"{a},{b}" for a, b in missing),
            "decaying_strategies": sorted(decaying),
            "stress_breach": bool(world.stress_breach and j == k - 1),
        }
        out.append((payload, notes))
    return out


def _stress_entry(
    rng: np.random.Generator, drawdown: float, var_range: tuple[float, float]
) -> dict[str, float]:
    var_99 = float(rng.uniform(*var_range))
    return {
        "max_drawdown": round(drawdown, 4),
        "var_99": round(var_99, 4),
        "es_99": round(var_99 * float(rng.uniform(1.15, 1.35)), 4),
    }


# =============================================================================================
# The whole landing zone
# =============================================================================================


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample` wrote. ``files`` are POSIX paths relative to ``root``."""

    root: Path
    seed: int
    today: dt.date
    now: dt.datetime
    worlds: tuple[str, ...]
    n_bundles: int
    n_snapshots: int
    n_policies: int
    n_model_cards: int
    bundles_by_stage: Mapping[str, int]
    bundles_by_archetype: Mapping[str, int]
    bundles_by_world: Mapping[str, int]
    files: tuple[str, ...]
    total_bytes: int
    manifest_path: Path
    elapsed_seconds: float

    def describe(self) -> str:
        """A few lines for a terminal."""
        lines = [
            f"sample landing zone: {self.root}",
            f"  seed {self.seed}, today {self.today.isoformat()}, clock {iso_utc(self.now)}",
            f"  worlds: {', '.join(self.worlds)}",
            f"  policies: {self.n_policies}   model cards: {self.n_model_cards}   "
            f"snapshots: {self.n_snapshots}",
            f"  run bundles: {self.n_bundles}  by world "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.bundles_by_world.items()))
            + "  by stage "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.bundles_by_stage.items())),
            "  archetypes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.bundles_by_archetype.items())),
            f"  {len(self.files)} files, {self.total_bytes / 1e6:.2f} MB, "
            f"in {self.elapsed_seconds:.2f} s",
            f"  manifest: {self.manifest_path}",
        ]
        return "\n".join(lines)


def _rounded(value: Any, digits: int = 6) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value


def generate_sample(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = DEFAULT_SEED,
    today: Any = None,
    n_runs: int | None = None,
) -> SampleSummary:
    """Write the sample landing zone under ``out_dir`` and return what was written.

    ``today``: see :func:`resolve_clock` (None = the fixed :data:`DEFAULT_TODAY`). ``n_runs``:
    number of run bundles (default: the 69-bundle base catalog); larger values repeat the catalog
    with strategy ids suffixed ``_rNNNN`` (same archetype mix, fresh random draws); smaller values
    take a prefix (backtests first, round-robin over worlds). Snapshots cover the base strategies.
    Existing files at the same paths are overwritten; nothing else under ``out_dir`` is touched.
    """
    started = time.perf_counter()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    today_date, now = resolve_clock(today)
    plans = _plan(n_runs)
    written: list[tuple[str, bytes]] = []

    # Policies
    policy_entries = []
    for world in WORLDS:
        for version in sorted(world_policies(world.world_id)):
            key = f"policies/{world.world_id}/{version}.yaml"
            written.append((key, render_policy(world.world_id, version).encode("utf-8")))
            policy_entries.append({"world_id": world.world_id, "version": version, "path": key})

    # Model cards (most strategies)
    strategies: dict[str, BundlePlan] = {}
    for plan in plans:
        strategies.setdefault(plan.strategy_id, plan)
    card_versions: dict[str, str] = {}
    card_entries = []
    for strategy_id, plan in sorted(strategies.items()):
        if not plan.entry.model_card:
            continue
        version = _model_card_version(plan.index)
        card_versions[strategy_id] = version
        key = f"model_cards/{strategy_id}.yaml"
        world = WORLD_BY_ID[plan.entry.world_id]
        card = _model_card(strategy_id, world, version, plan.archetype.name)
        written.append((key, card.encode("utf-8")))
        card_entries.append({"strategy_id": strategy_id, "model_card_version": version, "path": key})

    # Run bundles
    campaign_sizes = Counter(p.campaign_id for p in plans if p.campaign_id)
    bundle_entries = []
    backtest_sharpes: dict[str, float] = {}
    for plan in plans:
        bundle = _draw_bundle(plan, seed, today_date, now, campaign_sizes, card_versions)
        files = bundle_files(
            bundle.run, bundle.returns, bundle.trades, drop_date=bundle.drop_date,
            returns_format=plan.entry.returns_format,
        )
        written.extend(files)
        if plan.archetype.stage == "backtest" and plan.repetition == 0:
            backtest_sharpes.setdefault(plan.strategy_id, bundle.metrics["sharpe"])
        first_expected = bundle.expected[min(bundle.expected)]
        bundle_entries.append({
            "path": files[-1][0].rsplit("/", 1)[0],
            "world_id": plan.entry.world_id,
            "strategy_id": plan.strategy_id,
            "run_id": bundle.run["run_id"],
            "stage": plan.archetype.stage,
            "drop_date": bundle.drop_date.isoformat(),
            "submitted_at": bundle.run["submitted_at"],
            "archetype": plan.archetype.name,
            "expected_outcome": plan.archetype.expected_outcome,
            "description": plan.archetype.description,
            "files": [key.rsplit("/", 1)[1] for key, _ in files],
            "has_trades": bundle.trades is not None,
            "has_benchmark": "benchmark_ret" in bundle.returns.columns,
            "campaign_id": plan.campaign_id,
            "model_card": plan.strategy_id in card_versions,
            "metrics": _rounded(bundle.metrics),
            "expected": {str(v): o for v, o in bundle.expected.items()},
            "expected_status": first_expected["status"],
            "expected_failing_rules": first_expected["failing_rules"],
            "expected_recommended_stage": first_expected["recommended_stage"],
        })

    # Risk snapshots (base strategies only)
    snapshot_entries = []
    for world in WORLDS:
        base = [p for p in plans if p.repetition == 0 and p.entry.world_id == world.world_id]
        active = sorted({p.strategy_id for p in base if p.archetype.name == "good"})
        if len(active) < 2:
            continue
        decaying = sorted({
            p.strategy_id for p in base if p.archetype.name == "paper_decay" and world.signed
        } & set(active))
        for payload, notes in _snapshot_payloads(world, active, backtest_sharpes, decaying, seed, now):
            key_files = snapshot_files(
                payload,
                signing_key=DEMO_SIGNING_KEYS[world.world_id] if world.signed else None,
                with_hash=world.signed,
                as_refs=notes["as_refs"],
            )
            written.extend(key_files)
            as_of = resolve_clock(payload["as_of"])[1]
            lag = (now - as_of).total_seconds()
            max_lag = duration_seconds(world_policies(world.world_id)[1]["risk_hub"]["max_snapshot_lag"])
            snapshot_entries.append({
                "path": key_files[-1][0],
                "world_id": world.world_id,
                "version": payload["version"],
                "as_of": payload["as_of"],
                "form": "parquet_ref" if notes["as_refs"] else "inline",
                "files": [key.rsplit("/", 1)[1] for key, _ in key_files],
                "signed": notes["signed"],
                "signing_key_env": SIGNING_KEY_ENV.get(world.world_id) if world.signed else None,
                "strategies": sorted(payload["weights"]),
                "missing_pairs": notes["missing_pairs"],
                "decaying_strategies": notes["decaying_strategies"],
                "stress_breach": notes["stress_breach"],
                "lag_seconds_at_clock": lag,
                "fresh_at_clock": lag <= max_lag,
            })

    manifest = {
        "generator": "qmtl_validation.sample_data",
        "seed": seed,
        "today": today_date.isoformat(),
        "clock": iso_utc(now),
        "n_runs": len(plans),
        "periods_per_year": PERIODS_PER_YEAR,
        "worlds": {
            world.world_id: {
                "tier": world.tier,
                "client_critical": world.client_critical,
                "description": world.description,
                "policy_versions": sorted(world_policies(world.world_id)),
                "signing_key_env": SIGNING_KEY_ENV.get(world.world_id),
                "max_snapshot_lag": world_policies(world.world_id)[1]["risk_hub"]["max_snapshot_lag"],
            }
            for world in WORLDS
        },
        "policies": policy_entries,
        "model_cards": card_entries,
        "bundles": bundle_entries,
        "snapshots": snapshot_entries,
    }
    written.append((MANIFEST_NAME, _json_bytes(manifest)))
    _write_files(root, written)

    by_stage = Counter(e["stage"] for e in bundle_entries)
    by_archetype = Counter(e["archetype"] for e in bundle_entries)
    by_world = Counter(e["world_id"] for e in bundle_entries)
    return SampleSummary(
        root=root,
        seed=seed,
        today=today_date,
        now=now,
        worlds=tuple(w.world_id for w in WORLDS),
        n_bundles=len(bundle_entries),
        n_snapshots=len(snapshot_entries),
        n_policies=len(policy_entries),
        n_model_cards=len(card_entries),
        bundles_by_stage=dict(by_stage),
        bundles_by_archetype=dict(by_archetype),
        bundles_by_world=dict(by_world),
        files=tuple(sorted(key for key, _ in written)),
        total_bytes=sum(len(data) for _, data in written),
        manifest_path=root / MANIFEST_NAME,
        elapsed_seconds=time.perf_counter() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qmtl_validation.sample_data",
        description="Write the deterministic sample landing zone (policies, run bundles, model "
        "cards, risk snapshots and a manifest).",
    )
    parser.add_argument("--out", required=True, help="landing-zone root to write into, e.g. data/landing")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument(
        "--today",
        default=None,
        help=f"reference date YYYY-MM-DD (default {DEFAULT_TODAY.isoformat()}, noon UTC), an "
        "ISO-8601 instant, or 'today' for the real UTC clock (so sensors' look-back sees the drops)",
    )
    parser.add_argument(
        "--n-runs", type=int, default=None, help="number of run bundles (default: the base catalog)"
    )
    args = parser.parse_args(argv)
    summary = generate_sample(args.out, seed=args.seed, today=args.today, n_runs=args.n_runs)
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
