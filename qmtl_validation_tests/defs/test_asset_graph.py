"""The code location's asset graph, snapshotted so that any change to it shows up in review.

Regenerate the snapshot after an intended change with
``UPDATE_GRAPH_SNAPSHOT=1 .venv/bin/python -m pytest qmtl_validation_tests/defs/test_asset_graph.py``.
"""

import json
import os
from pathlib import Path

from qmtl_validation.definitions import defs

SNAPSHOT = Path(__file__).with_name("asset_graph.snapshot.json")


def graph_description() -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": getattr(partitions, "name", None) or (type(partitions).__name__ if partitions else None),
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "checks": sorted(check.name for check in node.check_keys),
            "owners": sorted(node.owners),
            "kinds": sorted(node.kinds),
            "backfill_policy": str(node.backfill_policy.policy_type.value) if node.backfill_policy else None,
        }
    sensors = sorted(sensor.name for sensor in defs.sensors or [])
    jobs = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    return {"assets": assets, "sensors": sensors, "jobs": jobs}


def test_asset_graph_matches_the_reviewed_snapshot():
    current = graph_description()
    if os.environ.get("UPDATE_GRAPH_SNAPSHOT") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_has_a_description_group_owner_and_kind():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description, name
        assert node.group_name and node.group_name != "default", name
        assert node.owners, name
        assert node.kinds, name
