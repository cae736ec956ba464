"""What the Dagster UI shows beside the graph: every asset check, sensor and job explains itself.

(Assets' descriptions, owners, kinds and groups are checked in ``defs/test_asset_graph.py``.)
"""

from qmtl_validation.definitions import defs


def test_every_asset_check_has_a_description():
    graph = defs.resolve_asset_graph()
    missing = [
        f"{key.asset_key.to_user_string()}:{key.name}"
        for key in graph.asset_check_keys
        if not (graph.get_check_spec(key).description or "").strip()
    ]
    assert graph.asset_check_keys and not missing


def test_every_sensor_says_what_it_watches():
    sensors = list(defs.sensors or [])
    assert {"run_bundle_sensor", "risk_snapshot_sensor"} <= {s.name for s in sensors}
    for sensor in sensors:
        assert len((sensor.description or "").split()) >= 8, sensor.name


def test_every_job_has_a_description():
    jobs = [job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")]
    assert jobs
    for job in jobs:
        assert (job.description or "").strip(), job.name
