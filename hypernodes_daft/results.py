"""Failures as data: `on_error="collect"` (or `"skip"`) keeps a map going when items fail.

    results = pipeline.map(inputs={"url": urls}, map_over="url", on_error="collect")
    results[3]            # {'_error': ErrorRecord(index=3, node='fetch', ...)}: no outputs
    results.errors        # every failure, in item order
    results.ok            # the outputs of the items that succeeded
    again = results.retry()   # re-run only the failed items; returns the merged results

A failed item's dict holds one key, `ERROR_FIELD`, instead of its outputs; the nodes
downstream of the failure did not run for it. With "skip" the failed items are left out of
the list (still listed in `results.errors`), so nothing vanishes silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .exceptions import ExecutionError, PlanningError

ERROR_FIELD = "_error"
ON_ERROR = ("raise", "skip", "collect")
# the record's fields as Arrow sees them (a struct column of a Daft frame or Parquet file)
RECORD_FIELDS = ("node", "path", "error_type", "message", "attempts", "inputs", "on_error")


@dataclass(frozen=True)
class ErrorRecord:
    """Why an item failed: the node that raised (`path` locates it in nested pipelines, e.g.
    `embed[1].tokenize`), the exception's type and message, how many attempts the node made
    (retries included), a short summary of its inputs, and the policy that kept it
    ("collect" or "skip"). `exception` is the exception itself on the local engines (None
    where it crossed a process or a Daft column); it does not take part in equality."""

    index: int | None
    node: str
    path: str
    error_type: str
    message: str
    attempts: int
    inputs: str
    on_error: str
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, error: ExecutionError, index: int | None = None) -> ErrorRecord:
        """The record of `error`, raised for map item `index` (None: not in a map)."""
        original = error.original
        return cls(
            index=index,
            node=error.node_name,
            path=format_path(error.path[1:] if isinstance(error.path[0], int) else error.path),
            error_type=type(original).__name__,
            message=str(original),
            attempts=getattr(original, "hypernodes_attempts", 1),
            inputs=error.inputs,
            on_error=error.on_error,
            exception=original,
        )

    def as_row(self) -> dict[str, Any]:
        """The record as a struct value (for a Daft column or Parquet)."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}

    def __str__(self) -> str:
        where = f"item {self.index}: " if self.index is not None else ""
        return f"{where}node '{self.path}' raised {self.error_type}: {self.message}"


@dataclass(frozen=True)
class Cancelled(ErrorRecord):
    """An item that did not finish because its run was cancelled (Ctrl-C, SIGTERM, a
    `deadline`): not a failure. `node` is where it stopped ("" if it had not started),
    `message` why. `MapResults.cancelled` lists them, `retry()` runs them again."""

    @classmethod
    def of(  # type: ignore[override]
        cls, index: int | None, message: str, node: str = ""
    ) -> Cancelled:
        return cls(index, node, node, CANCELLED, message, 0, "", "collect")


CANCELLED = Cancelled.__name__  # the error_type of a cancelled row in an `_error` column


def error_arrow_type() -> Any:
    """The Arrow type of an ErrorRecord as a struct value (`as_row`): the `_error` column
    of the frames and Parquet files every engine writes."""
    import pyarrow as pa  # when asked: importing the vocabulary loads no Arrow

    # every field a string but the count of attempts
    fields = [(n, pa.int64() if n == "attempts" else pa.string()) for n in RECORD_FIELDS]
    return pa.struct(fields)


def format_path(path: Iterable[str | int]) -> str:
    """`["embed", 1, "tokenize"]` -> `"embed[1].tokenize"`."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def check_on_error(value: Any, owner: str) -> None:
    if value not in ON_ERROR:
        raise PlanningError(f"{owner}: on_error must be one of {list(ON_ERROR)}, got {value!r}")


def failed_outputs(error: ExecutionError, index: int | None) -> dict[str, ErrorRecord]:
    """The result of an item that failed under "skip" or "collect"."""
    return {ERROR_FIELD: ErrorRecord.of(error, index)}


def record_from_row(row: dict[str, Any], index: int | None) -> ErrorRecord:
    """An ErrorRecord (a Cancelled one for a cancelled row) from its struct value
    (`as_row`), for map item `index`."""
    kind = Cancelled if row["error_type"] == CANCELLED else ErrorRecord
    return kind(index=index, **{name: row[name] for name in RECORD_FIELDS})


def error_of(outputs: Any) -> ErrorRecord | None:
    """The error record of an item's result, or None when it succeeded."""
    if isinstance(outputs, dict) and len(outputs) == 1:
        record = outputs.get(ERROR_FIELD)
        return record if isinstance(record, ErrorRecord) else None
    return None


class MapSource(Protocol):
    """Where map results came from, so their failed items can be re-run."""

    def inputs_of(self, indices: list[int]) -> dict[str, Any]: ...

    def map(self, indices: list[int]) -> MapResults: ...


class MapResults(list):  # type: ignore[type-arg]
    """What `Pipeline.map` returns: the list of per-item dicts, in item order, plus the
    failures. Without failures it is just that list (`==` compares as a list).

    - `errors`: an ErrorRecord per failed item (with "skip", those items are not in the list)
    - `cancelled`: a `Cancelled` record per item a cancelled run did not finish (they
      stay in the list, as `{"_error": Cancelled(...)}`; they are not `errors`)
    - `ok`: the outputs of the items that succeeded
    - `failed_inputs()`: the map inputs of the failed and cancelled items (zip mode)
    - `retry()`: re-run the failed and cancelled items with the same pipeline, engine and
      options, and return these results with those items replaced by their new outcome
    """

    def __init__(
        self,
        items: Iterable[dict[str, Any]],
        source: MapSource | None = None,
    ):
        entries = list(items)
        records = [r for r in map(error_of, entries) if r is not None]
        self.errors: list[ErrorRecord] = [r for r in records if not isinstance(r, Cancelled)]
        self.cancelled: list[Cancelled] = [r for r in records if isinstance(r, Cancelled)]
        super().__init__(e for e in entries if not skipped(e))
        self._entries = entries  # every item, failed ones as error dicts
        self._source = source

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [e for e in self._entries if error_of(e) is None]

    def failed_inputs(self) -> dict[str, Any]:
        """The inputs that re-run only the failed items: `pipeline.map(inputs=...,
        map_over=<the same names>)` (a product map's failed rows come back as zip lists)."""
        if self._source is None:
            raise RuntimeError("these results do not know the inputs they came from")
        return self._source.inputs_of(self._failed())

    def retry(self) -> MapResults:
        """Run the failed and cancelled items again (e.g. once a service is back); the
        items that succeed now replace their records."""
        failed = self._failed()
        if not failed or self._source is None:
            return self
        again = self._source.map(failed)
        merged = list(self._entries)
        for position, index in enumerate(failed):
            merged[index] = _reindexed(again._entries[position], index)
        return MapResults(merged, self._source)

    def _failed(self) -> list[int]:
        return [i for i, e in enumerate(self._entries) if error_of(e) is not None]


def skipped(outputs: dict[str, Any]) -> bool:
    """Whether an item's result is the record of a failure under on_error "skip"."""
    record = error_of(outputs)
    return record is not None and record.on_error == "skip"


def _reindexed(entry: dict[str, Any], index: int) -> dict[str, Any]:
    record = error_of(entry)
    return entry if record is None else {ERROR_FIELD: replace(record, index=index)}
