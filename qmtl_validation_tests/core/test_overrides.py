"""Override log, hash chain and re-review queue (SPEC §7, QMTL reference §1.7 and §6.4)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pandas as pd
import pytest

from qmtl_validation.core.overrides import (
    GENESIS_HASH,
    OverrideEntry,
    OverrideError,
    OverrideLog,
    attach_override,
    review_item,
    review_queue,
    review_window_days,
    row_hash,
    verify_chain,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def approve(log: OverrideLog, run_id: str = "run-1", *, days_ago: float = 1, **kwargs) -> OverrideEntry:
    defaults = dict(
        reason="liquidity breach explained by an index rebalance",
        actor="risk.alice",
        timestamp=NOW - dt.timedelta(days=days_ago),
        stage="paper",
        risk_tier="medium",
        now=NOW,
    )
    defaults.update(kwargs)
    entry = log.record("world-a", "mom", run_id, "approved", **defaults)
    assert entry is not None
    return entry


# --- recording -------------------------------------------------------------------------------


def test_approved_override_records_all_fields_and_chains_from_genesis():
    log = OverrideLog()
    entry = approve(log)
    assert entry.override_status == "approved"
    assert entry.override_actor == "risk.alice"
    assert entry.override_timestamp == NOW - dt.timedelta(days=1)
    assert entry.recorded_at == NOW
    assert entry.prev_hash == GENESIS_HASH
    assert entry.row_hash == row_hash(entry.to_dict())
    assert entry.row_hash.startswith("sha256:") and len(entry.row_hash) == 71
    assert len(log) == 1 and log.head_hash == entry.row_hash


@pytest.mark.parametrize(
    ("missing", "kwargs"),
    [
        ("override_reason", {"reason": None}),
        ("override_reason", {"reason": "   "}),
        ("override_actor", {"actor": ""}),
        ("override_timestamp", {"timestamp": None}),
    ],
)
def test_approval_without_a_required_field_names_it(missing, kwargs):
    log = OverrideLog()
    with pytest.raises(OverrideError) as info:
        approve(log, **kwargs)
    assert info.value.field == missing
    assert missing in str(info.value)
    assert len(log) == 0


def test_approval_missing_everything_names_every_field():
    with pytest.raises(OverrideError) as info:
        OverrideLog().record("world-a", "mom", "run-1", "approved", now=NOW)
    assert info.value.missing == ("override_reason", "override_actor", "override_timestamp")
    assert str(info.value) == (
        "an approved override needs override_reason, override_actor, override_timestamp"
    )


def test_rejection_without_timestamp_is_stamped_now():
    log = OverrideLog()
    entry = log.record("world-a", "mom", "run-1", "rejected", reason="stale data", now=NOW)
    assert entry is not None
    assert entry.override_timestamp == NOW
    assert entry.override_actor is None


def test_repeating_the_current_status_is_a_no_op():
    log = OverrideLog()
    approve(log)
    again = log.record(
        "world-a", "mom", "run-1", "approved",
        reason="another reason", actor="risk.bob", timestamp=NOW, now=NOW,
    )
    assert again is None
    assert len(log) == 1
    assert log.record("world-a", "mom", "run-2", "none", now=NOW) is None
    assert len(log) == 1


def test_changing_status_appends_and_the_latest_entry_is_current():
    log = OverrideLog()
    first = approve(log)
    second = log.record("world-a", "mom", "run-1", "rejected", reason="revoked", actor="risk.bob", now=NOW)
    assert second is not None and second.prev_hash == first.row_hash
    assert log.current_status("world-a", "mom", "run-1") == "rejected"
    assert log.current_status("world-a", "mom", "other") == "none"
    assert [e.override_status for e in log] == ["approved", "rejected"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("world-a", "mom", "../x", "approved"), "run_id"),
        (("world/a", "mom", "r", "approved"), "world_id"),
        (("world-a", "mom", "r", "maybe"), "override_status"),
    ],
)
def test_bad_identifiers_and_statuses_are_rejected(args, field):
    with pytest.raises(OverrideError) as info:
        OverrideLog().record(*args, reason="r", actor="a", timestamp=NOW, now=NOW)
    assert info.value.field == field


def test_status_is_case_insensitive():
    entry = OverrideLog().record("world-a", "mom", "r", " Rejected ", now=NOW)
    assert entry is not None and entry.override_status == "rejected"


def test_timestamp_far_in_the_future_is_refused():
    with pytest.raises(OverrideError) as info:
        approve(OverrideLog(), days_ago=-1)
    assert info.value.field == "override_timestamp"
    assert "in the future" in str(info.value)
    approve(OverrideLog(), days_ago=-1 / (24 * 60))  # one minute of clock skew is fine


def test_naive_and_offset_timestamps_are_utc():
    log = OverrideLog()
    entry = approve(log, timestamp="2024-05-30T14:00:00+02:00")
    assert entry.override_timestamp == dt.datetime(2024, 5, 30, 12, tzinfo=UTC)
    naive = approve(log, "run-2", timestamp="2024-05-30T12:00:00")
    assert naive.override_timestamp == dt.datetime(2024, 5, 30, 12, tzinfo=UTC)
    with pytest.raises(OverrideError):
        approve(log, "run-3", timestamp="last tuesday")


# --- summaries -------------------------------------------------------------------------------


def test_override_never_changes_the_computed_status():
    log = OverrideLog()
    entry = approve(log)
    summary = {"status": "fail", "recommended_stage": "backtest_only", "active": False}
    attached = attach_override(summary, entry)
    assert attached["status"] == "fail"
    assert attached["recommended_stage"] == "backtest_only"
    assert attached["active"] is False
    assert attached["override_status"] == "approved"
    assert attached["override_actor"] == "risk.alice"
    assert attached["override_timestamp"] == "2024-05-31T12:00:00Z"
    assert summary == {"status": "fail", "recommended_stage": "backtest_only", "active": False}


def test_summary_without_override_says_none():
    attached = attach_override({"status": "pass"}, None)
    assert attached == {
        "status": "pass",
        "override_status": "none",
        "override_reason": None,
        "override_actor": None,
        "override_timestamp": None,
    }


# --- storage and the hash chain --------------------------------------------------------------


def three_entry_log() -> OverrideLog:
    log = OverrideLog()
    approve(log, "run-1")
    approve(log, "run-2", stage="live")
    log.record("world-a", "mom", "run-1", "none", now=NOW)
    return log


def test_rows_round_trip_through_plain_dicts_and_json():
    log = three_entry_log()
    rows = json.loads(json.dumps(log.to_dicts()))
    assert verify_chain(rows) is None
    reloaded = OverrideLog(rows)
    assert reloaded.entries == log.entries
    assert reloaded.head_hash == log.head_hash


def test_rows_round_trip_through_parquet_types():
    rows = three_entry_log().to_dicts()
    frame = pd.DataFrame(rows)
    frame["override_timestamp"] = pd.to_datetime(frame["override_timestamp"], utc=True)
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True)
    from_table = frame.astype(object).where(frame.notna(), None).to_dict("records")
    assert verify_chain(from_table) is None
    assert OverrideLog(from_table).head_hash == OverrideLog(rows).head_hash


def test_edited_row_breaks_its_own_link():
    rows = three_entry_log().to_dicts()
    rows[1]["override_actor"] = "mallory"
    assert verify_chain(rows) == 1


def test_deleted_row_breaks_the_next_link():
    rows = three_entry_log().to_dicts()
    del rows[0]
    assert verify_chain(rows) == 0
    rows = three_entry_log().to_dicts()
    del rows[1]
    assert verify_chain(rows) == 1


def test_reordered_rows_break_the_chain():
    rows = three_entry_log().to_dicts()
    rows[1], rows[2] = rows[2], rows[1]
    assert verify_chain(rows) == 1


def test_rehashed_edit_still_breaks_the_following_link():
    rows = three_entry_log().to_dicts()
    rows[0]["override_reason"] = "something else"
    rows[0]["row_hash"] = row_hash(rows[0])
    assert verify_chain(rows) == 1


def test_truncation_is_found_only_with_the_expected_head():
    log = three_entry_log()
    rows = log.to_dicts()[:2]
    assert verify_chain(rows) is None
    assert verify_chain(rows, expected_head=log.head_hash) == 2
    assert verify_chain(log.to_dicts(), expected_head=log.head_hash) is None


def test_loading_a_broken_log_is_refused():
    rows = three_entry_log().to_dicts()
    rows[2]["override_status"] = "approved"
    with pytest.raises(OverrideError, match="broken at row 2"):
        OverrideLog(rows)


def test_entries_are_accepted_by_verify_chain():
    log = three_entry_log()
    assert verify_chain(list(log)) is None
    tampered = [log.entries[0], dataclasses.replace(log.entries[1], override_actor="x"), log.entries[2]]
    assert verify_chain(tampered) == 1


def test_verify_chain_of_empty_log_is_intact():
    assert verify_chain([]) is None
    assert verify_chain([], expected_head=GENESIS_HASH) is None


# --- re-review queue -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "tier", "critical", "days"),
    [
        ("live", "low", False, 30),
        ("paper", "high", True, 30),
        ("backtest", "high", True, 30),
        ("paper", "high", False, 90),
        ("paper", "medium", True, 90),
        ("backtest", "low", False, 90),
        (None, None, False, 30),
    ],
)
def test_review_window(stage, tier, critical, days):
    assert review_window_days(stage, tier, critical) == days


def test_forty_day_old_live_approval_is_overdue():
    log = OverrideLog()
    entry = approve(log, days_ago=40, stage="live", risk_tier="low")
    item = review_item(entry, now=NOW)
    assert item.review_window_days == 30
    assert item.review_due_at == entry.override_timestamp + dt.timedelta(days=30)
    assert item.review_due_at == dt.datetime(2024, 5, 22, 12, tzinfo=UTC)
    assert item.review_overdue is True
    assert item.missing_fields == ()
    assert item.ok is False


def test_forty_day_old_paper_approval_is_not_overdue():
    item = review_item(approve(OverrideLog(), days_ago=40, stage="paper"), now=NOW)
    assert item.review_window_days == 90
    assert item.review_due_at == dt.datetime(2024, 7, 21, 12, tzinfo=UTC)
    assert item.review_overdue is False and item.ok


def test_review_is_due_at_the_window_not_after():
    entry = approve(OverrideLog(), days_ago=30, stage="live")
    assert review_item(entry, now=NOW).review_overdue is False
    assert review_item(entry, now=NOW + dt.timedelta(seconds=1)).review_overdue is True


def test_queue_holds_current_approvals_only_due_first():
    log = OverrideLog()
    approve(log, "run-1", days_ago=10, stage="paper")  # due in 80 days
    approve(log, "run-2", days_ago=40, stage="live")  # overdue
    approve(log, "run-3", days_ago=5, stage="live")  # due in 25 days
    log.record("world-a", "mom", "run-3", "rejected", reason="withdrawn", now=NOW)
    log.record("world-b", "x", "run-9", "approved", reason="r", actor="a", timestamp=NOW, now=NOW)
    queue = review_queue(log, now=NOW, world_id="world-a")
    assert [item.run_id for item in queue] == ["run-2", "run-1"]
    assert [item.review_overdue for item in queue] == [True, False]
    assert queue[0].to_dict()["review_due_at"] == "2024-05-22T12:00:00Z"
    assert len(review_queue(log.to_dicts(), now=NOW)) == 3


def test_imported_approval_without_fields_is_flagged_and_overdue():
    row = {
        "world_id": "world-a", "strategy_id": "mom", "run_id": "legacy", "override_status": "approved",
        "override_reason": None, "override_actor": " ", "override_timestamp": None,
        "stage": "paper", "risk_tier": "low", "client_critical": False,
        "recorded_at": "2024-01-01T00:00:00Z", "prev_hash": GENESIS_HASH,
    }
    row["row_hash"] = row_hash(row)
    [item] = review_queue([row], now=NOW)
    assert item.missing_fields == ("override_reason", "override_actor", "override_timestamp")
    assert item.review_due_at is None and item.review_overdue is True


def test_unknown_row_field_is_rejected():
    row = three_entry_log().to_dicts()[0]
    row["approved_by"] = "x"
    with pytest.raises(OverrideError, match="approved_by"):
        OverrideEntry.from_dict(row)
