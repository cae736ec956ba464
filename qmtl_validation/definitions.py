"""The code location: merges each area's definitions and picks resources by profile."""

import dagster as dg

from qmtl_validation.defs.governance import definitions as governance
from qmtl_validation.defs.resources import resources_for
from qmtl_validation.defs.risk_hub import definitions as risk_hub
from qmtl_validation.defs.risk_hub import sensors as risk_hub_sensors
from qmtl_validation.defs.runs import definitions as runs
from qmtl_validation.settings import load_settings

defs = dg.Definitions.merge(
    runs.defs,
    risk_hub.defs,
    risk_hub_sensors.defs,
    governance.defs,
    dg.Definitions(resources=resources_for(load_settings()), executor=dg.in_process_executor),
)
