import dagster as dg

from qmtl_validation.defs.governance.assets import policy_diff
from qmtl_validation.defs.governance.invariants import validation_invariants
from qmtl_validation.defs.governance.sensors import POLICY_DIFF_JOB, policy_change_sensor
from qmtl_validation.defs.risk_hub.partitions import worlds_partitions

policy_diff_job = dg.define_asset_job(
    POLICY_DIFF_JOB,
    selection=dg.AssetSelection.assets(policy_diff),
    partitions_def=worlds_partitions,
    description="What a world's policy change flips: its runs under the old and the new version.",
)

defs = dg.Definitions(
    assets=[policy_diff, validation_invariants], jobs=[policy_diff_job], sensors=[policy_change_sensor]
)
