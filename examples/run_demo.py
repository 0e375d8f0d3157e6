"""Score a Parquet dataset of product reviews with the text pipeline: the main example.

    python examples/run_demo.py                    # 2000 reviews in examples/data/reviews
    python examples/run_demo.py --rows 200 --data /tmp/reviews --out /tmp/scored.parquet

Generates the dataset if missing, maps `examples.text_pipeline` over every review, writes
the ids and outputs to Parquet and prints the throughput and the first rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports Daft or Ray, which must only talk to 127.0.0.1

# `python examples/run_demo.py` puts examples/, not the repository, on the import path.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import hypernodes_daft as hd  # noqa: E402
from examples.make_dataset import make_dataset  # noqa: E402
from examples.text_pipeline import build_pipeline  # noqa: E402

DATA_DIR = REPO_ROOT / "examples" / "data" / "reviews"
OUTPUT_FILE = REPO_ROOT / "examples" / "data" / "output" / "reviews_scored.parquet"
INPUT_COLUMNS = ["text", "product", "stars"]  # the pipeline's inputs, one item per row
ID_COLUMNS = ["review_id", "product", "stars"]  # copied next to the outputs
PREVIEW_COLUMNS = [
    "review_id", "product", "stars", "category", "token_count", "sentiment", "helpfulness",
    "clean_text",
]  # fmt: skip


def make_engine() -> object:
    """The engine the demo runs on. The one line to change, e.g. to `hd.DaftEngine()`."""
    return hd.HypernodesEngine()


def score_reviews(table: pa.Table, engine: object) -> pa.Table:
    """Run the pipeline on every row of `table`; the id columns, then one column per output."""
    pipeline = build_pipeline(engine=engine)
    results = pipeline.map(
        inputs={name: table.column(name).to_pylist() for name in INPUT_COLUMNS},
        map_over=INPUT_COLUMNS,
    )
    outputs = {name: [row[name] for row in results] for name in results[0]} if results else {}
    return pa.table({**{name: table.column(name) for name in ID_COLUMNS}, **outputs})


def format_table(rows: list[dict], columns: list[str], max_width: int = 40) -> str:
    """Rows as aligned text columns; numbers right-aligned, long text cut to `max_width`.

    print(format_table([{"id": 1, "name": "mat"}], ["id", "name"]))
    # id  name
    #  1  mat
    """
    cells = [[_cell(row[c], max_width) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[c], (int, float)) for row in rows) for c in columns]

    def line(values: list[str]) -> str:
        padded = (
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(columns)] + [line(r) for r in cells])


def _cell(value: object, max_width: int) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text if len(text) <= max_width else text[: max_width - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="reviews to generate and score")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="dataset directory")
    parser.add_argument("--out", type=Path, default=OUTPUT_FILE, help="scored Parquet file")
    args = parser.parse_args(argv)

    files = make_dataset(args.data, n_rows=args.rows, n_files=min(4, args.rows))
    reviews = ds.dataset(files, format="parquet").to_table()

    started = time.perf_counter()
    scored = score_reviews(reviews, make_engine())
    elapsed = time.perf_counter() - started

    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(scored, args.out)
    print(f"rows processed: {scored.num_rows}")
    print(f"elapsed:        {elapsed:.3f} s")
    print(f"throughput:     {scored.num_rows / elapsed:,.0f} rows/s")
    print(f"written to:     {args.out}\n")
    print(format_table(scored.slice(0, 5).to_pylist(), PREVIEW_COLUMNS))


if __name__ == "__main__":
    main()
