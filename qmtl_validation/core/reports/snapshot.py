"""The risk snapshot report: what the portfolio looks like at one snapshot version.

Inputs are plain data:

- ``snapshot``: the validated snapshot (or its summary row): ``world_id``, ``version``, ``as_of``,
  ``hash``, ``provenance`` (``actor``, ``stage``, ``source``), ``ttl_sec``, ``weights``
  ({strategy_id: weight}), optional ``created_at``, ``is_fallback``/``fallback``. Bulky fields
  (covariance, realized returns, stress, signature) are not printed here.
- ``portfolio_risk``: the ``core.portfolio_risk`` result (SPEC §10): ``volatility``, ``var``,
  ``es``, ``component_var`` ({strategy: value}), ``incremental_var`` / ``incremental_es``
  ({candidate: value}), ``imputed_pairs``, optional ``alpha``. None when not computed.
- ``stress_rows``: one dict per scenario (and strategy), e.g. ``scenario``, ``strategy_id``,
  ``pnl``, ``max_drawdown``, ``var_99``, ``es_99``, optional ``status``; every key is shown.

VaR, ES and drawdown are positive loss fractions (SPEC §5, §8).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from qmtl_validation.core.reports._format import (
    MISSING,
    as_mapping,
    format_timestamp,
    format_value,
    one_line,
    table_columns,
)
from qmtl_validation.core.reports.document import (
    Block,
    Document,
    Fields,
    Image,
    Paragraph,
    Section,
    Table,
)

RISK_CONTRIBUTIONS_CHART_TITLE = "Risk contributions (component VaR)"
_SNAPSHOT_FIELDS = ("world_id", "version", "as_of", "hash", "provenance", "ttl_sec", "weights",
                    "created_at", "is_fallback", "fallback")
_NOT_PRINTED = ("covariance", "covariance_ref", "realized_returns", "realized_returns_ref",
                "stress", "stress_ref", "signature", "constraints")
STRESS_COLUMNS = ("scenario", "strategy_id", "pnl", "stress_pnl", "max_drawdown", "var_99",
                  "es_99", "status")


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else one_line(str(value))


def component_var(portfolio_risk: Mapping[str, Any] | None) -> dict[str, float]:
    """``component_var`` of a portfolio-risk result as {strategy: float} (empty when absent)."""
    if not portfolio_risk:
        return {}
    raw = as_mapping(portfolio_risk).get("component_var") or {}
    return {str(k): float(v) for k, v in raw.items() if v is not None}


def build_snapshot_report(
    snapshot: Mapping[str, Any],
    portfolio_risk: Mapping[str, Any] | None,
    stress_rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    generated_at: Any = None,
    images: Sequence[Image] = (),
) -> Document:
    """The snapshot report as a :class:`Document` (see the module docstring)."""
    snapshot = as_mapping(snapshot)
    risk = as_mapping(portfolio_risk) if portfolio_risk else {}
    weights = {str(k): v for k, v in (snapshot.get("weights") or {}).items()}
    provenance = as_mapping(snapshot.get("provenance")) if snapshot.get("provenance") else {}
    fallback = snapshot.get("is_fallback", snapshot.get("fallback"))

    fields: list[tuple[str, str | tuple[str, ...]]] = [
        ("World", _text(snapshot.get("world_id"))),
        ("Version", _text(snapshot.get("version"))),
        ("As of", format_timestamp(snapshot.get("as_of"))),
        ("Hash", _text(snapshot.get("hash"))),
        ("Producer", " / ".join(_text(provenance.get(k)) for k in ("actor", "stage", "source"))),
        ("TTL (seconds)", format_value(snapshot.get("ttl_sec"))),
        ("Strategies weighted", str(len(weights))),
    ]
    if fallback is not None:
        fields.append(("Fallback snapshot", "yes" if fallback else "no"))
    fields += [
        ("Created at", format_timestamp(snapshot.get("created_at"))),
        ("Report generated at", format_timestamp(generated_at)),
    ]
    other = sorted(k for k in snapshot if k not in _SNAPSHOT_FIELDS and k not in _NOT_PRINTED)
    blocks: list[Block] = [Fields(tuple(fields))]
    if other:
        blocks.append(Fields(tuple((key, format_value(snapshot[key])) for key in other)))
    if fallback:
        blocks.append(Paragraph(
            "This is a conservative fallback snapshot, materialised because the producer's "
            "snapshot was older than the world's freshness limit.", "warn"))
    sections = [Section("0. Snapshot", tuple(blocks), "snapshot")]

    if risk:
        alpha = risk.get("alpha", 0.99)
        level = f"{float(alpha):.0%}" if isinstance(alpha, (int, float)) else _text(alpha)
        risk_blocks: list[Block] = [
            Fields((
                ("Volatility (σ_p)", format_value(risk.get("volatility"))),
                (f"VaR ({level})", format_value(risk.get("var"))),
                (f"ES ({level})", format_value(risk.get("es"))),
            )),
            Paragraph("Gaussian, zero-mean portfolio model; VaR and ES are positive loss "
                      "fractions of portfolio value over one period."),
        ]
        imputed = risk.get("imputed_pairs") or ()
        if imputed:
            pairs = tuple(sorted(",".join(p) if isinstance(p, (list, tuple)) else str(p)
                                 for p in imputed))
            risk_blocks.append(Fields((("Imputed covariance pairs (fallback correlation)",
                                        pairs),)))
        sections.append(Section("1. Portfolio risk", tuple(risk_blocks), "risk"))
    else:
        sections.append(Section("1. Portfolio risk", (
            Paragraph("No portfolio risk was computed for this snapshot.", "warn"),), "risk"))

    contributions = component_var(risk)
    total = sum(contributions.values())
    names = sorted(set(weights) | set(contributions),
                   key=lambda n: (-abs(contributions.get(n, 0.0)), n))
    contribution_rows = tuple(
        (
            name,
            format_value(weights.get(name)),
            format_value(contributions.get(name)),
            f"{contributions[name] / total:.1%}" if name in contributions and total else MISSING,
        )
        for name in names
    )
    sections.append(Section("2. Risk contributions", (
        *images,
        Table(("Strategy", "Weight", "Component VaR", "Share of VaR"), contribution_rows,
              empty_text="No weights in this snapshot."),
    ), "contributions"))

    incremental_var = risk.get("incremental_var") or {}
    incremental_es = risk.get("incremental_es") or {}
    candidate_rows = tuple(
        (str(c), format_value(incremental_var.get(c)), format_value(incremental_es.get(c)))
        for c in sorted(set(incremental_var) | set(incremental_es), key=str)
    )
    sections.append(Section("3. Candidates (incremental risk)", (
        Table(("Candidate", "Incremental VaR", "Incremental ES"), candidate_rows,
              empty_text="No candidates were evaluated against this snapshot."),
    ), "candidates"))

    rows = [as_mapping(r) for r in stress_rows or ()]
    columns = table_columns(rows, STRESS_COLUMNS)
    rows.sort(key=lambda r: (str(r.get("scenario", "")), str(r.get("strategy_id", ""))))
    stress_table = Table(
        tuple(columns),
        tuple(tuple(format_value(r.get(c)) for c in columns) for r in rows),
        row_classes=tuple(str(r.get("status") or "").lower() or None for r in rows),
        empty_text="No stress results in this snapshot.",
    )
    sections.append(Section("4. Stress scenarios", (
        stress_table,
        Paragraph("P&L as supplied by the producer; drawdown, VaR and ES are positive losses."),
    ), "stress"))

    title = f"Risk snapshot — {_text(snapshot.get('world_id'))} @ {_text(snapshot.get('version'))}"
    return Document(title=title, sections=tuple(sections),
                    status="warn" if fallback else None,
                    subtitle=f"as of {format_timestamp(snapshot.get('as_of'))}")

