import dagster as dg

# One key per evaluation run: ``world_id/strategy_id/run_id`` (identifiers never contain commas).
evaluation_runs_partitions = dg.DynamicPartitionsDefinition(name="evaluation_runs")
