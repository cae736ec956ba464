"""pandera contracts as Dagster types and blocking asset checks.

Every DataFrame asset validates its frame with its pandera model inside the asset (all failures
collected) before anything is handed to the IO manager; the result is reported as the asset's
blocking ``contract`` check. A violation fails the check and the step, so nothing that breaks a
contract reaches the lake and nothing downstream runs on it.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator, Mapping, NamedTuple

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from dagster_pandera import pandera_schema_to_dagster_type

from qmtl_validation.core.contracts import ContractError, validate_frame

CONTRACT_CHECK = "contract"
# Set on a frame's ``attrs`` by ``validated_outputs`` once the frame passed its model's contract.
_VALIDATED_AGAINST = "qmtl_contract"


@functools.cache
def table_type(model: type[pa.DataFrameModel]) -> dg.DagsterType:
    """One Dagster type per contract (Dagster refuses two type objects with the same name).

    The type shows the model in the UI (name, description, column schema) and its check is
    pandera's, except for a frame ``validated_outputs`` has just validated against this same
    model: validating a 10-million-row frame a second time, unchanged, doubled the cost of a large
    backfill and could not fail.
    """
    pandera_type = pandera_schema_to_dagster_type(model)
    contract = model.Config.name

    def type_check_fn(context: Any, value: object) -> dg.TypeCheck:
        if isinstance(value, pd.DataFrame) and value.attrs.get(_VALIDATED_AGAINST) == contract:
            return dg.TypeCheck(success=True, description=f"{contract} contract passed in the asset")
        return pandera_type.type_check(context, value)

    return dg.DagsterType(
        type_check_fn=type_check_fn,
        name=pandera_type.unique_name,
        description=pandera_type.description,
        metadata=pandera_type.metadata,
        typing_type=pd.DataFrame,
    )


def contract_check_spec(asset_name: str, model: type[pa.DataFrameModel]) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CONTRACT_CHECK,
        asset=asset_name,
        blocking=True,
        description=(
            f"Every row satisfies the `{model.Config.name}` pandera contract (columns, types, "
            "ranges, uniqueness); validated inside the asset before anything is written."
        ),
    )


class TableOutput(NamedTuple):
    asset_name: str
    model: type[pa.DataFrameModel]
    frame: pd.DataFrame
    metadata: Mapping[str, Any]


def validated_outputs(*outputs: TableOutput, multi: bool = False) -> Iterator[Any]:
    """Validate every output first, then yield them with their passed checks.

    When any contract is broken, the failed checks are reported and the step fails before a
    single output is yielded, so a multi-output asset never writes half of its tables.
    ``multi``: the outputs belong to a multi_asset (``Output`` needs its output name).
    """
    validated: list[pd.DataFrame] = []
    failures: list[tuple[TableOutput, ContractError]] = []
    for output in outputs:
        try:
            validated.append(validate_frame(output.model, output.frame, source=output.asset_name))
        except ContractError as error:
            failures.append((output, error))
    if failures:
        for output, error in failures:
            yield dg.AssetCheckResult(
                asset_key=output.asset_name,
                check_name=CONTRACT_CHECK,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "problems": error.problem_count,
                    "first_problems": dg.MetadataValue.md(
                        "\n".join(f"- {problem}" for problem in error.problems[:20])
                    ),
                },
            )
        summary = "; ".join(f"{o.asset_name}: {e.problem_count} problem(s)" for o, e in failures)
        raise dg.Failure(
            description=f"contract violated, nothing written ({summary})\n"
            + "\n".join(str(e) for _, e in failures),
        )
    for output, frame in zip(outputs, validated, strict=True):
        frame.attrs[_VALIDATED_AGAINST] = output.model.Config.name
        metadata = {"rows": len(frame), **output.metadata}
        if multi:
            yield dg.Output(frame, output_name=output.asset_name, metadata=metadata)
        else:
            yield dg.Output(frame, metadata=metadata)
        yield dg.AssetCheckResult(
            asset_key=output.asset_name,
            check_name=CONTRACT_CHECK,
            passed=True,
            metadata={"rows": len(frame)},
        )
