"""A local map's results written as Parquet, the way DaftEngine writes its frames: the mapped
inputs, then the outputs, then (when failures may be kept) the `_error` struct column, null
where the row succeeded; the rows failed under on_error "skip" are left out."""

from __future__ import annotations

from typing import Any

from ...plan import MapPlan, iter_rows
from ...results import ERROR_FIELD, error_arrow_type, error_of, skipped
from ...runtime.items import may_settle
from ...runtime.node_call import Values


def write_results(
    plan: MapPlan,
    inputs: Values,
    results: list[Values],
    on_error: str,
    path: str,
    **options: Any,
) -> list[str]:
    """Write `results`, the map of `plan` over `inputs`, under `path` with Daft (`options`
    as `daft.DataFrame.write_parquet` takes them); returns the files written."""
    import daft
    import pyarrow as pa

    kept = [i for i, result in enumerate(results) if not skipped(result)]
    rows = list(iter_rows(inputs, plan.map_over, plan.map_mode))
    columns: dict[str, Any] = {
        name: [rows[i][at] for i in kept] for at, name in enumerate(plan.map_over)
    }
    outputs = [results[i] for i in kept]
    columns.update({name: [row.get(name) for row in outputs] for name in plan.item.outputs})
    if may_settle(plan.item, on_error):
        records = [None if (r := error_of(row)) is None else r.as_row() for row in outputs]
        columns[ERROR_FIELD] = pa.array(records, type=error_arrow_type())
    frame = daft.from_pydict(columns)
    return list(frame.write_parquet(path, **options).to_pydict()["path"])
