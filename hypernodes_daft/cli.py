"""The `hypernodes-daft` command: run a pipeline over a Parquet dataset, inspect it, or
look after a result cache.

    hypernodes-daft run examples/text_pipeline.py:pipeline --input "data/*.parquet" --output out/
    hypernodes-daft run my.py:pipeline --input in/ --output out/ --map-over text --set lang=en
    hypernodes-daft inspect examples/text_pipeline.py:pipeline [--engine daft --input ...]
    hypernodes-daft estimate my.py:pipeline --input in/ --sample 20 --seed 1   # calls, time, cost
    hypernodes-daft cache info .cache                  # entries, size, oldest and newest use
    hypernodes-daft cache prune s3://bucket/cache --older-than 7d [--max-size 10GiB]
    hypernodes-daft cache clear .cache

`run` maps over the dataset's columns the pipeline reads (or those named by --map-over),
writes the dataset's columns plus the pipeline's outputs as Parquet, and prints a summary.
`estimate` takes `run`'s arguments (no --output), runs `--sample` random rows for real and
prints the projection for the whole dataset (`Pipeline.estimate`).
Errors are one line and a non-zero exit; `--debug` shows the traceback. With `--on-error
collect` (or `skip`) a row whose node fails does not stop the run: it is written with its
`_error` record and null outputs (with `skip`, left out of the output), one line counts the
failures, and the exit code is 0. `cache` takes a local directory or an object-store URL
(s3://..., with the standard AWS variables), as `DiskCache` does.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ._local_only import keep_local
from .resources import format_bytes
from .results import CANCELLED


class UsageError(Exception):
    """A mistake in the command line or its files: reported in one line."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keep_local()  # before Daft or Ray is imported
    try:
        return args.command(args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the command said what it kept
        return 130
    except Exception as error:  # one line for the user; the traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"hypernodes-daft: error: {_one_line(error)}", file=sys.stderr)
        return 1


def run_command(args: argparse.Namespace) -> int:
    from .callbacks import MetricsCallback, ProgressCallback
    from .dataset import count_rows
    from .io import write_parquet

    pipeline = load_pipeline(args.target)
    dataset, inputs, map_over = mapped_dataset(pipeline, args)
    metrics = MetricsCallback()
    callbacks = [metrics] if args.no_progress else [ProgressCallback(file=sys.stderr), metrics]
    tolerant = {} if args.on_error == "raise" else {"on_error": args.on_error}
    started = time.perf_counter()
    try:
        files = write_parquet(
            pipeline,
            inputs,
            args.output,
            map_over=map_over,
            output_name=args.outputs or None,
            engine=make_engine(args, callbacks),
            write_mode="overwrite",
            **tolerant,
        )
    except KeyboardInterrupt:
        _interrupted_without_output(args, metrics)
        raise
    elapsed = time.perf_counter() - started
    rows = count_rows(files)
    failures = _failures(files) if tolerant else []
    cancelled = [f for f in failures if f["error_type"] == CANCELLED]
    failures = [f for f in failures if f["error_type"] != CANCELLED]
    total = dataset.frame.count_rows() if tolerant else rows
    skipped = total - rows - len(cancelled)  # rows failed under "skip" are not written
    print(f"rows:     {rows}")
    print(f"time:     {elapsed:.2f} s ({rows / elapsed:,.0f} rows/s)" if elapsed else "")
    print(f"mapped:   {', '.join(map_over)}")
    print(f"written:  {len(files)} file(s) under {args.output}")
    print(f"\nper node (calls computed, cache hits, time):\n{metrics.table()}")
    if failures or skipped:
        print(f"\n{_failure_line(failures, total, skipped)}")
    if cancelled:
        finished = rows - len(cancelled) - len(failures)
        print(
            f"\ninterrupted: {finished} of {total} rows finished and were kept (written, and "
            f"in the cache when --cache is given); {len(cancelled)} cancelled rows are written "
            "with a Cancelled _error record: run the command again to compute them"
        )
        return 130
    return 0


def _interrupted_without_output(args: argparse.Namespace, metrics: Any) -> None:
    """What an interrupted run without on_error collect kept: no output, the calls made."""
    calls = sum(stats["calls"] for stats in metrics.summary().values())
    kept = f"in the cache {args.cache}" if args.cache else "nowhere (no --cache was given)"
    print(
        f"interrupted: nothing written to {args.output}; {calls} node calls finished and "
        f"were kept {kept}. With --on-error collect the finished rows are written, and "
        "with --cache a re-run computes only the rest",
        file=sys.stderr,
    )


def mapped_dataset(
    pipeline: Any, args: argparse.Namespace
) -> tuple[Any, dict[str, Any], list[str]]:
    """`--input` read lazily, the map's inputs (its columns and the `--set` constants) and
    the columns to map over (`--map-over`, else those the pipeline reads), checked."""
    from .io import read_parquet

    bindings = parse_settings(args.set)
    dataset = read_parquet(args.input)
    inputs = {**dict(dataset), **bindings}
    map_over = args.map_over or [c for c in dataset if c in pipeline.graph.root_args]
    _check_columns(pipeline, dataset, map_over, bindings)
    _check_column_types(pipeline, dataset, map_over)
    return dataset, inputs, map_over


def estimate_command(args: argparse.Namespace) -> int:
    """`run`'s map estimated from `--sample` random rows (run for real, and cached with
    `--cache`): per node the calls, seconds per call and cost, and the wall time."""
    pipeline = load_pipeline(args.target)
    _, inputs, map_over = mapped_dataset(pipeline, args)
    estimate = pipeline.estimate(
        inputs,
        map_over=map_over,
        sample=args.sample,
        engine=make_engine(args),
        output_name=args.outputs or None,
        seed=args.seed,
    )
    print(estimate.table())
    return 0


def _failures(files: list[str]) -> list[dict[str, Any]]:
    """The error records (`_error` struct values) of the failed rows written to `files`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .results import ERROR_FIELD

    failures = []
    for file in files:
        if ERROR_FIELD in pq.read_schema(file).names:
            errors = pq.read_table(file, columns=[ERROR_FIELD])[ERROR_FIELD]
            failures.extend(errors.filter(pc.is_valid(errors)).to_pylist())
    return failures


def _failure_line(collected: list[dict[str, Any]], total: int, skipped: int) -> str:
    """`3 of 2000 rows failed (node 'fetch': ZeroDivisionError x3); see the _error column`,
    and how many were left out (on_error "skip": their records are not written)."""
    from collections import Counter

    line = f"{len(collected) + skipped} of {total} rows failed"
    if collected:
        by_node: dict[str, Counter[str]] = {}
        for failure in collected:
            by_node.setdefault(failure["node"], Counter())[failure["error_type"]] += 1
        parts = [  # the nodes with the most failures first
            f"node '{name}': " + ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common())
            for name, kinds in sorted(by_node.items(), key=lambda e: (-e[1].total(), e[0]))
        ]
        shown = "; ".join(parts[:3]) + ("; ..." if len(parts) > 3 else "")
        line += f" ({shown}); see the _error column"
    if skipped:
        line += f"; {skipped} left out of the output (skip)"
    return line


def inspect_command(args: argparse.Namespace) -> int:
    from .options import options_of

    pipeline = load_pipeline(args.target)
    graph = pipeline.graph
    print(f"pipeline {pipeline.label!r}")
    print(f"  inputs:  {', '.join(graph.root_args)}")
    print(f"  outputs: {', '.join(graph.available_output_names)}")
    print("  nodes:")
    for node in graph.execution_order:
        outputs = ", ".join(node.output_names)
        request = options_of(node).request
        needs = f"  [{request}]" if request else ""
        print(f"    {getattr(node, 'name', node)}({', '.join(node.root_args)}) -> {outputs}{needs}")
    if args.graph:
        pipeline.visualize(args.graph, depth=None)
        print(f"  graph:   {args.graph}")
    if args.engine == "daft":
        from .io import read_parquet

        if not args.input:
            raise UsageError("inspect --engine daft needs --input, the dataset to plan over")
        dataset = read_parquet(args.input)
        bindings = parse_settings(args.set)
        map_over = args.map_over or [c for c in dataset if c in graph.root_args]
        _check_columns(pipeline, dataset, map_over, bindings)
        engine = make_engine(args).lazy()
        frame = pipeline.map({**dict(dataset), **bindings}, map_over=map_over, engine=engine)
        frame.explain(show_all=False)
    return 0


def cache_info_command(args: argparse.Namespace) -> int:
    info = _open_cache(args.location).info()
    print(f"location:  {info.location}")
    print(f"entries:   {info.entries}")
    print(f"size:      {format_bytes(info.bytes)}")
    print(f"oldest:    {_utc(info.oldest)}")
    print(f"newest:    {_utc(info.newest)}")
    return 0


def cache_clear_command(args: argparse.Namespace) -> int:
    removed = _open_cache(args.location).clear()
    print(f"removed:   {_entries(removed)}")
    return 0


def cache_prune_command(args: argparse.Namespace) -> int:
    if args.older_than is None and args.max_size is None:
        raise UsageError("cache prune needs --older-than DURATION and/or --max-size SIZE")
    older_than = None if args.older_than is None else parse_duration(args.older_than)
    cache = _open_cache(args.location)
    removed = cache.prune(older_than=older_than, max_size=args.max_size)
    info = cache.info()
    print(f"removed:   {_entries(removed)}")
    print(f"remaining: {_entries(info.entries)}, {format_bytes(info.bytes)}")
    return 0


def _open_cache(location: str) -> Any:
    """The DiskCache at `location`, which must already exist: DiskCache makes a missing
    directory, and a mistyped path would otherwise be an empty cache, silently."""
    from ._storage import is_url
    from .cache import DiskCache

    if not is_url(location) and not Path(location.removeprefix("file://")).is_dir():
        raise UsageError(f"no cache at {location}")
    cache = DiskCache(location)
    if cache.remote:
        cache.check()  # an unreachable endpoint or a missing bucket: one line naming the URL
    return cache


def _entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def _utc(timestamp: float | None) -> str:
    from datetime import datetime, timezone

    if timestamp is None:  # an empty cache
        return "-"
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds, from `30s`, `15m`, `12h`, `7d` or `2w` (a number and one unit). A bare
    number is refused: "7" could mean seconds or days, and pruning guesses wrong at a cost."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if match is None:
        raise UsageError(
            f"--older-than {text!r} is not a duration (use a number and a unit: "
            "30s, 15m, 12h, 7d, 2w)"
        )
    return float(match[1]) * _DURATION_UNITS[match[2]]


def load_pipeline(target: str) -> Any:
    """`path/to/file.py:name` -> the Pipeline object `name` defined in that file."""
    from .pipeline import Pipeline

    path_text, _, name = target.rpartition(":")
    if not path_text or not name:
        raise UsageError(f"expected FILE.py:NAME, got {target!r}")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    sys.path.insert(0, str(path.resolve().parent))  # the file's own imports work
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # worker processes find functions by module name
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise UsageError(f"{path} has no attribute {name!r}")
    pipeline = getattr(module, name)
    if callable(pipeline) and not isinstance(pipeline, Pipeline):
        pipeline = pipeline()  # a factory such as build_pipeline
    if not isinstance(pipeline, Pipeline):
        raise UsageError(f"{target} is a {type(pipeline).__name__}, not a Pipeline")
    return pipeline


def parse_settings(settings: list[str]) -> dict[str, Any]:
    """`--set name=value`: values are Python literals when they parse, else strings."""
    values = {}
    for setting in settings:
        name, equals, text = setting.partition("=")
        if not equals or not name:
            raise UsageError(f"--set expects name=value, got {setting!r}")
        try:
            values[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[name] = text
    return values


def make_engine(args: argparse.Namespace, callbacks: list[Any] | None = None) -> Any:
    from .cache import DiskCache

    cache = DiskCache(args.cache) if args.cache else None
    if args.engine == "local":
        from .engines.local import HypernodesEngine

        return HypernodesEngine(cache=cache, callbacks=callbacks)
    from .engines.daft import DaftEngine

    return DaftEngine(runner=args.runner, address=args.address, cache=cache, callbacks=callbacks)


def _check_columns(
    pipeline: Any, dataset: Any, map_over: list[str], bindings: dict[str, Any]
) -> None:
    missing = [c for c in map_over if c not in dataset]
    if missing:
        raise UsageError(
            f"--map-over names {missing}, not columns of the dataset (columns: {list(dataset)})"
        )
    needed = pipeline.unfulfilled_args
    absent = [a for a in needed if a not in dataset and a not in bindings]
    if absent:
        raise UsageError(
            f"the pipeline needs {absent}: no such column in the dataset (columns: "
            f"{list(dataset)}); pass them with --set name=value"
        )


# A plain type hint -> the Arrow column kinds that can feed it (int also feeds float).
_KINDS = {
    int: ("integer",),
    float: ("integer", "floating"),
    str: ("string", "large_string"),
    bool: ("boolean",),
}


def _check_column_types(pipeline: Any, dataset: Any, map_over: list[str]) -> None:
    """A mapped column whose type cannot feed a node's plain hint (int, float, str, bool)
    is refused before anything runs, naming the column, its type, the node and the hint."""
    import typing

    import pyarrow.types as pat

    schema = dataset.frame.schema()
    for name in map_over:
        dtype = schema[name].dtype
        arrow = dtype.to_arrow_dtype()
        kind = next((k for k in ("integer", "floating", "string", "large_string", "boolean")
                     if getattr(pat, f"is_{k}")(arrow)), None)  # fmt: skip
        for consumer in pipeline.graph.consumers.get(name, []):
            func = getattr(consumer, "func", None)
            try:
                hint = typing.get_type_hints(func).get(name) if func is not None else None
            except Exception:  # hints that do not resolve: nothing to check
                continue
            accepted = _KINDS.get(hint)
            if accepted and kind is not None and kind not in accepted:
                raise UsageError(
                    f"column {name!r} holds {dtype} values, but node "
                    f"'{getattr(consumer, 'name', consumer)}' takes {name}: {hint.__name__}"
                )


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypernodes-daft", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="{run,inspect,estimate,cache}")
    run = commands.add_parser("run", help="map a pipeline over a Parquet dataset, write Parquet")
    run.set_defaults(command=run_command)
    run.add_argument("--output", required=True, help="directory for the Parquet output")
    inspect = commands.add_parser("inspect", help="print a pipeline's nodes, inputs and plan")
    inspect.set_defaults(command=inspect_command)
    inspect.add_argument("--graph", metavar="FILE.svg", help="draw the DAG to an SVG file")
    estimate = commands.add_parser(
        "estimate", help="run a random sample of the rows; project calls, time and cost"
    )
    estimate.set_defaults(command=estimate_command)
    estimate.add_argument("--sample", type=int, default=20, help="rows to run (default 20)")
    estimate.add_argument("--seed", type=int, help="the sample's random seed (reproducible)")
    for command in (run, inspect, estimate):
        command.add_argument("target", help="FILE.py:NAME, the Pipeline (or a function making one)")
        needed = command is not inspect  # run and estimate map over a dataset
        command.add_argument("--input", required=needed, help="Parquet file, dir or glob")
        if needed:
            command.add_argument(
                "--outputs", nargs="+", help="the outputs to compute (default: all)"
            )
        command.add_argument("--map-over", nargs="+", help="columns to map over")
        engine_help = "default: daft" if needed else "daft: also print the Daft plan"
        command.add_argument(
            "--engine",
            choices=["daft", "local"],
            default="daft" if needed else None,
            help=engine_help,
        )
        command.add_argument("--runner", choices=["native", "ray"], default="native")
        command.add_argument("--address", help="Ray cluster address (with --runner ray)")
        command.add_argument(
            "--cache",
            metavar="DIR_OR_URL",
            help="cache node results in DIR or at s3://bucket/prefix",
        )
        command.add_argument(
            "--set", action="append", default=[], metavar="NAME=VALUE", help="a constant input"
        )
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    run.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    run.add_argument(
        "--on-error",
        choices=["raise", "skip", "collect"],
        default="raise",
        help="a failing row: stop the run (default), leave it out, or write it with _error",
    )
    _cache_parser(commands)
    return parser


def _cache_parser(commands: Any) -> None:
    cache = commands.add_parser("cache", help="show, prune or clear a result cache")
    actions = cache.add_subparsers(required=True, metavar="{info,prune,clear}")
    info = actions.add_parser("info", help="entries, size, oldest and newest use")
    info.set_defaults(command=cache_info_command)
    prune = actions.add_parser("prune", help="remove old entries, or the least recently used")
    prune.set_defaults(command=cache_prune_command)
    # parsed by the command, not argparse: a bad value is then our one-line error
    prune.add_argument("--older-than", metavar="DURATION", help="e.g. 30s, 15m, 12h, 7d, 2w")
    prune.add_argument("--max-size", metavar="SIZE", help="keep at most SIZE, e.g. 10GiB")
    clear = actions.add_parser("clear", help="remove every entry")
    clear.set_defaults(command=cache_clear_command)
    for action in (info, prune, clear):
        action.add_argument("location", metavar="PATH_OR_URL", help="a directory or s3://...")
        action.add_argument("--debug", action="store_true", help="show tracebacks")


if __name__ == "__main__":
    sys.exit(main())
