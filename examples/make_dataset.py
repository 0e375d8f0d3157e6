"""A deterministic Parquet dataset of short, messy product reviews, built offline.

    from pathlib import Path
    from examples.make_dataset import make_dataset

    files = make_dataset(Path("examples/data/reviews"), n_rows=2000, n_files=4, seed=0)
    # [.../part-00000.parquet, ..., .../part-00003.parquet]

Columns: `review_id` int64, `product` string, `text` string (stray whitespace, shouting,
punctuation), `stars` int8 in 1..5, `created_at` timestamp (UTC). The text comes from the
small word lists below and `random.Random(seed)`, so the same arguments give the same files.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Bump when the generator changes, so datasets written by an older version get rewritten.
GENERATOR_VERSION = 1
METADATA_KEY = b"examples.make_dataset"

SCHEMA = pa.schema(
    [
        ("review_id", pa.int64()),
        ("product", pa.string()),
        ("text", pa.string()),
        ("stars", pa.int8()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

PRODUCTS = [
    "trail running shoes",
    "espresso machine",
    "noise cancelling headphones",
    "yoga mat",
    "cast iron skillet",
    "mechanical keyboard",
    "desk lamp",
    "water bottle",
    "backpack",
    "phone case",
    "electric kettle",
    "gift card",  # not in the pipeline's catalog: exercises its fallback category
]
ASPECTS = ["quality", "price", "battery", "build", "design", "size", "sound", "handle", "strap"]
POSITIVE = ["great", "excellent", "perfect", "sturdy", "comfortable", "amazing", "solid"]
NEGATIVE = ["terrible", "flimsy", "awful", "cheap", "noisy", "useless", "disappointing"]
PEOPLE = ["wife", "husband", "son", "daughter", "dad", "mom", "roommate", "boss"]
STAR_WEIGHTS = [10, 8, 12, 30, 40]  # reviews skew positive, as on real shops

POSITIVE_SENTENCES = [
    "the {product} is {pos}",
    "{pos} {aspect} for the price",
    "i love it",
    "would recommend to anyone",
    "arrived fast and feels {pos}",
    "best purchase this year",
]
NEGATIVE_SENTENCES = [
    "the {aspect} broke after {n} weeks",
    "{neg} {aspect} honestly",
    "not {pos} at all",
    "i returned it and want a refund",
    "what a waste of money",
    "the {product} is {neg}",
]
NEUTRAL_SENTENCES = [
    "bought it for my {person}",
    "the {aspect} is ok",
    "it does the job",
    "arrived on time",
    "{aspect} could be better but fine",
]
ENDINGS = [".", ".", ".", "!", "!!", "!!!", "...", "?!", ""]


def make_dataset(path: Path, n_rows: int = 2000, n_files: int = 4, seed: int = 0) -> list[Path]:
    """Write `n_rows` reviews over `n_files` Parquet files in `path`; return the file paths.

    Files already written with the same arguments are kept as they are.

        files = make_dataset(Path("/tmp/reviews"), n_rows=100, n_files=2, seed=1)
    """
    if n_files < 1 or n_rows < n_files:
        raise ValueError(f"need 1 <= n_files <= n_rows, got n_files={n_files}, n_rows={n_rows}")
    path = Path(path)
    files = [path / f"part-{i:05d}.parquet" for i in range(n_files)]
    params = _params_json(n_rows, n_files, seed)
    if all(_written_with(f, params) for f in files):
        return files
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("part-*.parquet"):  # a bigger old split would leave extra parts
        old.unlink()
    table = generate_reviews(n_rows, seed).replace_schema_metadata({METADATA_KEY: params})
    for file, (start, stop) in zip(files, _chunks(n_rows, n_files), strict=True):
        pq.write_table(table.slice(start, stop - start), file)
    return files


def generate_reviews(n_rows: int, seed: int = 0) -> pa.Table:
    """The reviews as one in-memory table (what `make_dataset` splits into files).

    generate_reviews(3, seed=0).column("stars").to_pylist()  # [5, 5, 5]
    """
    rng = random.Random(seed)
    # A separate stream for dates keeps the first rows the same whatever `n_rows` is.
    clock = random.Random(f"{seed}-created_at")
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    # Sorted: review ids grow with time, as database ids do.
    seconds = sorted(clock.randrange(365 * 24 * 3600) for _ in range(n_rows))
    products, texts, stars = [], [], []
    for _ in range(n_rows):
        product = rng.choice(PRODUCTS)
        rating = rng.choices(range(1, 6), weights=STAR_WEIGHTS)[0]
        products.append(product)
        texts.append(_review_text(rng, product, rating))
        stars.append(rating)
    columns = [
        list(range(1, n_rows + 1)),
        products,
        texts,
        stars,
        [start + timedelta(seconds=s) for s in seconds],
    ]
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )


def _review_text(rng: random.Random, product: str, stars: int) -> str:
    """One to three sentences whose mood follows the stars, then made messy."""
    sentences = [
        _sentence(rng, product, _templates_for(rng, stars)) for _ in range(rng.randint(1, 3))
    ]
    return _messy(rng, sentences)


def _templates_for(rng: random.Random, stars: int) -> list[str]:
    """Sentence templates for one sentence: mostly of the mood the stars suggest."""
    if stars >= 4:
        pools = [POSITIVE_SENTENCES] * 4 + [NEUTRAL_SENTENCES]
    elif stars <= 2:
        pools = [NEGATIVE_SENTENCES] * 4 + [NEUTRAL_SENTENCES]
    else:
        pools = [POSITIVE_SENTENCES, NEGATIVE_SENTENCES, NEUTRAL_SENTENCES]
    return rng.choice(pools)


def _sentence(rng: random.Random, product: str, templates: list[str]) -> str:
    return rng.choice(templates).format(
        product=product,
        pos=rng.choice(POSITIVE),
        neg=rng.choice(NEGATIVE),
        aspect=rng.choice(ASPECTS),
        person=rng.choice(PEOPLE),
        n=rng.randint(2, 6),
    )


def _messy(rng: random.Random, sentences: list[str]) -> str:
    """Capitalize or shout, add uneven punctuation and whitespace, as people type."""
    parts = []
    for sentence in sentences:
        shout = rng.random()
        if shout < 0.1:
            sentence = sentence.upper()
        elif shout < 0.7:
            sentence = sentence.capitalize()
        parts.append(sentence + rng.choice(ENDINGS))
    text = "".join(p + rng.choice([" ", " ", "  ", "\t", "\n "]) for p in parts)
    return rng.choice(["", "", " ", "   "]) + text


def _chunks(n_rows: int, n_files: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges of near-equal size, in order."""
    bounds = [n_rows * i // n_files for i in range(n_files + 1)]
    return list(pairwise(bounds))


def _params_json(n_rows: int, n_files: int, seed: int) -> bytes:
    params = {"n_rows": n_rows, "n_files": n_files, "seed": seed, "version": GENERATOR_VERSION}
    return json.dumps(params, sort_keys=True).encode()


def _written_with(file: Path, params: bytes) -> bool:
    """Whether `file` exists, is readable and was written with these parameters."""
    try:
        metadata = pq.read_schema(file).metadata or {}
    except (OSError, pa.ArrowInvalid):  # missing, or cut short by an interrupted run
        return False
    return metadata.get(METADATA_KEY) == params
