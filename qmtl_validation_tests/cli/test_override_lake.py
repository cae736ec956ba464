"""Overrides recorded from the CLI reach the warehouse, hash chain intact."""

from qmtl_validation.cli import main
from qmtl_validation.core.overrides import OverrideLog
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.run_rows import override_entries, review_items_by_run
from qmtl_validation_tests.dagster_harness import deployment

APPROVE = ["override", "--world", "w1", "--strategy", "s1", "--run", "r1", "--status", "approved",
           "--reason", "capacity accepted", "--actor", "risk_lead", "--timestamp", "2026-10-01T00:00:00Z",
           "--stage", "live"]


def test_each_recorded_override_is_one_lake_row_and_the_chain_verifies_from_the_lake(tmp_path, monkeypatch):
    env = deployment(tmp_path, monkeypatch)
    assert main(APPROVE) == 0
    assert main(APPROVE) == 0  # the same status again is a no-op: no second row
    assert main(["override", "--world", "w1", "--strategy", "s1", "--run", "r1", "--status", "none"]) == 0
    rows = Lake(env.settings.lake_root).read("overrides")
    assert list(rows.sort_values("recorded_at")["override_status"]) == ["approved", "none"]
    log = OverrideLog(override_entries(rows))  # refuses a broken chain
    assert log.current_status("w1", "s1", "r1") == "none"
    approved = review_items_by_run(rows, rows["recorded_at"].max())["w1/s1/r1"][0]
    assert approved["review_due_at"] == "2026-10-31T00:00:00Z" and approved["review_overdue"] is True
