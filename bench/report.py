"""The measured part of ``docs/PERFORMANCE.md``, regenerated from ``bench/results.json``.

The document's prose (method, analysis, how to rerun) is written by hand; the blocks between
``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` markers are replaced by every full
``python -m bench`` run, so the table in the docs is always the last measurement.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

GIB = 2**30
MIB = 2**20


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value == float("inf"):
        return "∞"
    if value < 0.01:
        return f"{value * 1000:.3f} ms"
    if value < 100:
        return f"{value:.3f} s"
    return f"{value:,.0f} s"


def _value(row: Mapping[str, Any]) -> str:
    value = row.get("value")
    if value is None:
        return "—"
    return f"{value:,.1f}×" if row["unit"] == "×" else _seconds(value)


def _verdict(row: Mapping[str, Any]) -> str:
    if row.get("error"):
        return "error"
    return {True: "**met**", False: "**missed**", None: "—"}[row.get("met")]


def target_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "| row (key in `bench/results.json`) | target | median | min | max | reference library, same run (median) | measured | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in rows.items():
        timing = row.get("timing") or {}
        details = row.get("details") or {}
        reference = details.get("reference_timing")
        reference_text = (
            f"{details.get('reference')}: {_seconds(reference['median'])} "
            f"(min {_seconds(reference['min'])}, max {_seconds(reference['max'])})"
            if reference else ""
        )
        measured = _value(row)
        if "memory_ratio" in details:
            measured += f"; peak memory {details['memory_ratio']:.2f}× the panel"
        if key.startswith(("rules_", "drop_to_catalog")) and timing.get("p95") is not None:
            measured = f"p95 {measured}"
        lines.append(
            f"| {row['what']} (`{key}`) | {row['target']} | {_seconds(timing.get('median'))} | "
            f"{_seconds(timing.get('min'))} | {_seconds(timing.get('max'))} | {reference_text} | "
            f"{measured} | {_verdict(row)} |"
        )
    return "\n".join(lines)


def machine_text(results: Mapping[str, Any]) -> str:
    machine = results.get("machine") or {}
    versions = machine.get("versions") or {}
    blas = machine.get("blas") or {}
    environment = machine.get("blas_environment") or {}
    found = {k: v for k, v in (environment.get("found") or {}).items() if v}
    load = machine.get("load_average_at_start") or []
    lines = [
        f"- CPU: {machine.get('cpu_model')} × {machine.get('cpus')} (as the OS reports them), "
        f"memory {(machine.get('memory_bytes') or 0) / GIB:.0f} GiB, {machine.get('platform')}",
        f"- load average when the run started: {', '.join(f'{v:.2f}' for v in load)} "
        "(other work shares this machine; see *Method*)",
        "- " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"- OpenBLAS kernel numpy ran with: `{blas.get('core')}` ({blas.get('source')}); "
        + (f"the environment set {', '.join(f'{k}={v}' for k, v in found.items())}, which the "
           "bench unset for its own processes" if found and environment.get("unset_for_bench")
           else "no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE override was set"),
        f"- run: {results.get('started_at')} → {results.get('finished_at')} ({results.get('mode')} mode)",
    ]
    return "\n".join(lines)


def scaling_text(results: Mapping[str, Any]) -> str:
    scaling = results.get("scaling") or {}
    lines = []
    panel = scaling.get("panel") or []
    if panel:
        lines += ["| runs × 2,520 periods | full set, median | min | max | peak memory | × panel |",
                  "|---|---|---|---|---|---|"]
        for point in panel:
            timing = point["timing"]
            lines.append(
                f"| {point['runs']:,} | {_seconds(timing['median'])} | {_seconds(timing['min'])} | "
                f"{_seconds(timing['max'])} | {point['peak_traced_bytes'] / MIB:,.0f} MiB | "
                f"{point['peak_traced_bytes'] / point['panel_bytes']:.2f} |"
            )
    backfill = scaling.get("backfill") or []
    if backfill:
        lines += ["", "| runs in the backfill | instance | backfill wall (median) | sum of step times | "
                      "initial validation | intake | peak RSS |",
                  "|---|---|---|---|---|---|---|"]
        for point in sorted(backfill, key=lambda p: (p["instance"], p["runs"])):
            lines.append(
                f"| {point['runs']:,} | {point['instance']} | {_seconds(point['backfill_s'])} | "
                f"{_seconds(point.get('step_seconds_total'))} | {_seconds(point.get('initial_validation_s'))} | "
                f"{_seconds(point.get('intake_s'))} | {point['peak_rss_bytes'] / GIB:.1f} GiB |"
            )
    return "\n".join(lines)


def _replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name}:start -->\n).*?(<!-- bench:{name}:end -->)", re.S)
    if not pattern.search(text):
        return text
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def update_document(path: Path, results: Mapping[str, Any], ordered_rows: Mapping[str, Any]) -> bool:
    """Rewrite the generated blocks of ``path``; False when the document has no markers."""
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    updated = _replace_block(text, "table", target_table(ordered_rows))
    updated = _replace_block(updated, "machine", machine_text(results))
    updated = _replace_block(updated, "scaling", scaling_text(results))
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return "<!-- bench:table:start -->" in text
