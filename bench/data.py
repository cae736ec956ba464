"""Benchmark inputs from fixed seeds: return panels and landing zones of run bundles.

Panels: ``PERIODS`` = 2,520 daily periods (ten years) of Student-t(4) returns (fat tails, as real
strategies have), clipped to ±50 %; one run in five starts later (leading NaN padding), so the
panel is ragged as a warehouse of real runs is. The frame is what the Dagster assets hand the
engine: one column per run, rows are periods, backed by a runs × periods block.

Landing zones: ``qmtl_validation.sample_data.generate_sample(n_runs=N)`` — the sample catalog's
archetype mix (three worlds, backtest/paper/live runs, trades logs, benchmarks, CSV and Parquet
bundles) repeated with fresh draws. Generating 10,000 bundles takes a minute or two, so zones are
cached under the cache folder keyed by the seed, the size and a digest of the generator's source:
a changed generator regenerates, an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PERIODS = 2520
PANEL_SEED = 20240601
SAMPLE_SEED = 20251127


def make_panel(n_runs: int, n_periods: int = PERIODS, seed: int = PANEL_SEED) -> pd.DataFrame:
    """Fixed-seed ragged panel: rows = periods, columns = runs ``run-00000``..."""
    rng = np.random.default_rng(seed)
    by_run = rng.standard_t(4, size=(n_runs, n_periods)) * 0.007 + 0.0003
    np.clip(by_run, -0.5, 0.5, out=by_run)  # a t(4) draw can exceed a 100 % loss
    late = rng.random(n_runs) < 0.2
    starts = np.where(late, rng.integers(1, max(2, n_periods // 2), size=n_runs), 0)
    by_run[np.arange(n_periods) < starts[:, None]] = np.nan
    columns = [f"run-{i:05d}" for i in range(n_runs)]
    return pd.DataFrame(by_run.T, columns=columns)  # a view: the frame's block is runs × periods


def business_day_index(n_periods: int) -> pd.DatetimeIndex:
    """The dates the reference libraries get (quantstats resamples by calendar)."""
    return pd.bdate_range("2015-01-02", periods=n_periods, name="date")


def _generator_digest() -> str:
    import qmtl_validation.sample_data as sample_data

    return hashlib.sha256(Path(sample_data.__file__).read_bytes()).hexdigest()[:12]


def landing_zone(cache_dir: Path, n_runs: int, *, seed: int = SAMPLE_SEED) -> tuple[Path, dict[str, Any]]:
    """A landing zone with ``n_runs`` bundles (generated once, then reused from the cache).

    Returns (landing root, facts: today's date of the sample, generation seconds, bytes, whether
    it came from the cache).
    """
    from qmtl_validation.sample_data import generate_sample

    root = cache_dir / f"landing-seed{seed}-runs{n_runs}-{_generator_digest()}"
    facts_path = root / ".bench-facts.json"
    if facts_path.exists():
        facts = json.loads(facts_path.read_text(encoding="utf-8"))
        facts["cached"] = True
        return root, facts
    if root.exists():
        shutil.rmtree(root)  # an interrupted generation
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    started = time.perf_counter()
    summary = generate_sample(partial, seed=seed, n_runs=n_runs)
    facts = {
        "n_runs": summary.n_bundles,
        "today": summary.today.isoformat(),
        "generation_s": time.perf_counter() - started,
        "bytes": summary.total_bytes,
        "files": len(summary.files),
        "seed": seed,
    }
    (partial / ".bench-facts.json").write_text(json.dumps(facts), encoding="utf-8")
    partial.rename(root)
    facts["cached"] = False
    return root, facts
