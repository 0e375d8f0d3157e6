"""Score a Parquet dataset of product reviews with the text pipeline: the main example.

    python examples/run_demo.py                    # 2000 reviews in examples/data/reviews
    python examples/run_demo.py --rows 200 --data /tmp/reviews --out /tmp/scored

Generates the dataset if missing, then runs the `hypernodes-daft run` command on it: the
pipeline of `examples/text_pipeline.py` over every review on Daft's local runner, Parquet
in (read lazily), Parquet out (the review columns plus one column per output), with
progress bars and the command's summary (rows, time, per-node calls, cache hits, time);
then prints the first rows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from hypernodes_daft._local_only import keep_local

keep_local()  # before anything imports Daft or Ray, which must only talk to 127.0.0.1

# `python examples/run_demo.py` puts examples/, not the repository, on the import path.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pyarrow.parquet as pq  # noqa: E402

from examples.make_dataset import make_dataset  # noqa: E402
from hypernodes_daft import cli  # noqa: E402

DATA_DIR = REPO_ROOT / "examples" / "data" / "reviews"
OUTPUT_DIR = REPO_ROOT / "examples" / "data" / "output" / "reviews_scored"
INPUT_COLUMNS = ["text", "product", "stars"]  # the pipeline's inputs, one item per row
PREVIEW_COLUMNS = [
    "review_id", "product", "stars", "category", "token_count", "sentiment", "helpfulness",
    "clean_text",
]  # fmt: skip


def score_reviews(data: Path, out: Path) -> int:
    """`hypernodes-daft run` over every review under `data`, writing under `out`."""
    pipeline = REPO_ROOT / "examples" / "text_pipeline.py"
    return cli.main(
        ["run", f"{pipeline}:pipeline", "--input", str(data / "*.parquet"),
         "--output", str(out), "--map-over", *INPUT_COLUMNS]
    )  # fmt: skip


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

    print(f"$ hypernodes-daft run examples/text_pipeline.py:pipeline --input {args.data}/*.parquet"
          f" --output {args.out} --map-over {' '.join(INPUT_COLUMNS)}\n")  # fmt: skip
    if score_reviews(args.data, args.out):
        sys.exit(1)
    scored = pq.ParquetDataset(str(args.out)).read().sort_by("review_id")
    print(f"\nfirst rows of {args.out}:")
    print(format_table(scored.slice(0, 5).to_pylist(), PREVIEW_COLUMNS))


if __name__ == "__main__":
    main()
