"""Score a Parquet dataset of product reviews with the text pipeline: the main example.

    python examples/run_demo.py                    # 2000 reviews in examples/data/reviews
    python examples/run_demo.py --rows 200 --data /tmp/reviews --out /tmp/scored

Generates the dataset if missing, then maps `examples.text_pipeline` over every review on
Daft's local runner: Parquet in (read lazily), Parquet out (the review columns plus one
column per output), and prints the throughput and the first rows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports Daft or Ray, which must only talk to 127.0.0.1

# `python examples/run_demo.py` puts examples/, not the repository, on the import path.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pyarrow.parquet as pq  # noqa: E402

import hypernodes_daft as hd  # noqa: E402
from examples.make_dataset import make_dataset  # noqa: E402
from examples.text_pipeline import build_pipeline  # noqa: E402

DATA_DIR = REPO_ROOT / "examples" / "data" / "reviews"
OUTPUT_DIR = REPO_ROOT / "examples" / "data" / "output" / "reviews_scored"
INPUT_COLUMNS = ["text", "product", "stars"]  # the pipeline's inputs, one item per row
PREVIEW_COLUMNS = [
    "review_id", "product", "stars", "category", "token_count", "sentiment", "helpfulness",
    "clean_text",
]  # fmt: skip


def make_engine() -> object:
    """The engine the demo runs on; `hd.HypernodesEngine()` gives the same results."""
    return hd.DaftEngine()


def score_reviews(data: Path, out: Path, engine: object) -> list[str]:
    """Run the pipeline on every review under `data`; write Parquet files under `out`."""
    reviews = hd.read_parquet(str(data / "*.parquet"))
    pipeline = build_pipeline(engine=engine)
    return hd.write_parquet(pipeline, reviews, str(out), map_over=INPUT_COLUMNS, engine=engine)


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
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR, help="scored Parquet directory")
    args = parser.parse_args(argv)

    make_dataset(args.data, n_rows=args.rows, n_files=min(4, args.rows))
    shutil.rmtree(args.out, ignore_errors=True)  # a re-run replaces the previous output

    started = time.perf_counter()
    files = score_reviews(args.data, args.out, make_engine())
    elapsed = time.perf_counter() - started

    scored = pq.ParquetDataset(files).read().sort_by("review_id")
    print(f"rows processed: {scored.num_rows}")
    print(f"elapsed:        {elapsed:.3f} s (incl. reading and writing Parquet)")
    print(f"throughput:     {scored.num_rows / elapsed:,.0f} rows/s")
    print(f"written to:     {args.out} ({len(files)} file(s))\n")
    print(format_table(scored.slice(0, 5).to_pylist(), PREVIEW_COLUMNS))


if __name__ == "__main__":
    main()
