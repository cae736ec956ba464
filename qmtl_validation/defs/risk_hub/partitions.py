import dagster as dg

# One key per risk snapshot: ``world_id/version``.
risk_snapshots_partitions = dg.DynamicPartitionsDefinition(name="risk_snapshots")

# One key per world, for world-level risk assets (the conservative fallback snapshot).
worlds_partitions = dg.DynamicPartitionsDefinition(name="worlds")
