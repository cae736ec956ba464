"""The result every validation rule returns, and the rule protocol (SPEC §7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol

Status = Literal["pass", "warn", "fail"]
Severity = Literal["blocking", "soft", "info"]
Owner = Literal["quant", "risk", "ops"]

STATUS_ORDER: dict[str, int] = {"fail": 0, "warn": 1, "pass": 2}


@dataclass(frozen=True)
class RuleResult:
    status: Status
    severity: Severity
    owner: Owner
    reason_code: str
    reason: str
    tags: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "severity": self.severity,
            "owner": self.owner,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "tags": list(self.tags),
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RuleResult":
        return cls(
            status=data["status"],
            severity=data["severity"],
            owner=data["owner"],
            reason_code=data["reason_code"],
            reason=data["reason"],
            tags=tuple(data.get("tags") or ()),
            details=dict(data.get("details") or {}),
        )


class Rule(Protocol):
    """A validation rule: a small object evaluated against one run's metrics."""

    name: str

    def evaluate(self, metrics: Mapping[str, Any], context: Any) -> RuleResult: ...


def summary_status(results: Mapping[str, RuleResult]) -> Status:
    """fail if any blocking rule fails, else warn if anything fails or warns, else pass."""
    if any(r.status == "fail" and r.severity == "blocking" for r in results.values()):
        return "fail"
    if any(r.status in ("fail", "warn") for r in results.values()):
        return "warn"
    return "pass"
