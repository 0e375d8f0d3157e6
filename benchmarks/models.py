"""A replicated model on Daft's native runner: `@stateful(replicas=2)` against a hand-written
Daft class UDF with two instances, and against building the model in every batch.

The "model" sleeps INIT seconds when built (2 s; 0.2 s in --smoke) and 5 ms per call
(1 ms in --smoke), over 20,000 rows (400 in --smoke). All three give the same column.
Budgets: replicas=2 within 1.2x of the hand-written `daft.cls(max_concurrency=2)`, and at
least 3x faster than building the model per batch (all three in batches of the size
DaftEngine gives a replicated group, REPLICA_BATCH).
"""

from __future__ import annotations

import sys
import time

import daft
from _common import Budget, Report, best_of, check_failure, parse_args
from daft import DataType, col

from hypernodes_daft import DaftEngine, Pipeline, node, stateful
from hypernodes_daft.engines.daft.udfs import REPLICA_BATCH as BATCH  # the same batches

SIZES = {"init": 2.0, "call": 0.005, "rows": 20_000}


def build() -> None:
    time.sleep(SIZES["init"])


def predict(x: int) -> int:
    time.sleep(SIZES["call"])
    return x * 2


@stateful(replicas=2)
class Model:
    def __init__(self):
        build()

    def predict(self, x: int) -> int:
        return predict(x)


@node(output_name="y")
def score(x: int, model: Model) -> int:
    return model.predict(x)


@daft.cls(max_concurrency=2)
class HandWritten:
    def __init__(self):
        build()

    @daft.method.batch(return_dtype=DataType.int64(), batch_size=BATCH)
    def __call__(self, x: daft.Series) -> list[int]:
        return [predict(v) for v in x.to_pylist()]


@daft.func.batch(return_dtype=DataType.int64(), batch_size=BATCH)
def per_batch(x: daft.Series) -> list[int]:
    build()
    return [predict(v) for v in x.to_pylist()]


def check(ys: list[int], xs: list[int]) -> None:
    assert sorted(ys) == [2 * x for x in xs], "wrong y column"


def main() -> int:
    args = parse_args(__doc__, default_repeat=1)
    if args.smoke:
        SIZES.update(init=0.2, call=0.001, rows=400)
    xs = list(range(SIZES["rows"]))
    report = Report("a replicated model (@stateful(replicas=2)) on the native runner", args)
    workload = f"{len(xs):,} rows, {SIZES['call'] * 1000:g} ms/call, {SIZES['init']:g} s init"

    def by_hand() -> list[int]:
        frame = daft.from_pydict({"x": xs}).with_column("y", HandWritten()(col("x")))
        return frame.collect().to_pydict()["y"]

    def replicated() -> list[int]:
        pipeline = Pipeline(nodes=[score], engine=DaftEngine())
        return [r["y"] for r in pipeline.map(inputs={"x": xs, "model": Model()}, map_over="x")]

    def rebuilt() -> list[int]:
        frame = daft.from_pydict({"x": xs}).with_column("y", per_batch(col("x")))
        return frame.collect().to_pydict()["y"]

    timings = {}
    for name, run in (("hand", by_hand), ("replicas", replicated), ("rebuilt", rebuilt)):
        timings[name] = best_of(run, repeat=args.repeat, warmup=0)
    wrong = {k: check_failure(lambda t=t: check(t.result, xs)) for k, t in timings.items()}
    base = report.add(
        workload,
        "daft.cls(max_concurrency=2), by hand",
        timings["hand"],
        len(xs),
        wrong=wrong["hand"],
    )
    rebuilt_row = report.add(
        workload,
        "model built in every batch",
        timings["rebuilt"],
        len(xs),
        wrong=wrong["rebuilt"],
    )
    report.add(
        workload,
        "@stateful(replicas=2) on DaftEngine()",
        timings["replicas"],
        len(xs),
        baseline=base,
        budget=Budget("ratio_max", 1.2),
        wrong=wrong["replicas"],
    )
    report.add(
        workload, "@stateful(replicas=2), against building per batch", timings["replicas"],
        len(xs), baseline=rebuilt_row, budget=Budget("speedup_min", 3), wrong=wrong["replicas"],
    )  # fmt: skip
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
