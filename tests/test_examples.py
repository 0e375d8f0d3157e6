"""The main example: dataset generator, review-scoring pipeline and the demo script."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from examples.make_dataset import SCHEMA, make_dataset
from examples.text_pipeline import build_pipeline, feature_pipeline, pipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = {
    "clean_text", "tokens", "token_count", "distinct_ratio", "sentiment", "exclamations",
    "category", "helpfulness",
}  # fmt: skip

# Expected values worked out by hand from the rules in examples/text_pipeline.py:
# helpfulness = 0.4 * min(tokens, 20) / 20 + 0.3 * distinct_ratio + 0.3 * agreement
#               - 0.05 * min(exclamations, 4), rounded to 4 decimals.
HAND_CHECKED = [
    (
        {"text": "  This  SKILLET is GREAT!!  Love it, would recommend. ",
         "product": "cast iron skillet", "stars": 5},
        {"clean_text": "this skillet is great love it would recommend",
         "token_count": 8, "distinct_ratio": 1.0, "sentiment": 3,  # great, love, recommend
         "exclamations": 2, "category": "kitchen",
         "helpfulness": 0.66},  # 0.16 + 0.3 + 0.3 (tone agrees) - 0.1
    ),
    (
        {"text": "Not great. The strap broke after two weeks... I didn\u2019t love it, NOT good!",
         "product": "Backpack", "stars": 2},
        {"clean_text": "not great the strap broke after two weeks i didnt love it not good",
         "token_count": 14, "distinct_ratio": 0.9286,  # 13 distinct ("not" twice) / 14
         "sentiment": -4,  # not great, broke, didnt love, not good
         "exclamations": 1, "category": "outdoors",
         "helpfulness": 0.8086},  # 0.28 + 0.27858 + 0.3 - 0.05
    ),
    (
        {"text": "ok", "product": "gift card", "stars": 1},
        {"clean_text": "ok", "token_count": 1, "distinct_ratio": 1.0, "sentiment": 0,
         "exclamations": 0, "category": "other",
         "helpfulness": 0.47},  # 0.02 + 0.3 + 0.15 (neutral tone, 1 star: half agreement)
    ),
    (
        {"text": " \t!!! \n", "product": "yoga mat", "stars": 3},
        {"clean_text": "", "token_count": 0, "distinct_ratio": 0.0, "sentiment": 0,
         "exclamations": 3, "category": "fitness",
         "helpfulness": 0.15},  # 0 + 0 + 0.3 (neutral and 3 stars agree) - 0.15
    ),
]  # fmt: skip


# -- make_dataset ----------------------------------------------------------------------------


def test_dataset_files_schema_and_values(tmp_path):
    files = make_dataset(tmp_path, n_rows=50, n_files=3, seed=7)
    assert [f.name for f in files] == [f"part-0000{i}.parquet" for i in range(3)]
    tables = [pq.read_table(f) for f in files]
    assert [t.num_rows for t in tables] == [16, 17, 17]
    assert all(t.schema.remove_metadata() == SCHEMA for t in tables)
    rows = [row for t in tables for row in t.to_pylist()]
    assert [r["review_id"] for r in rows] == list(range(1, 51))
    assert {r["stars"] for r in rows} <= {1, 2, 3, 4, 5}
    assert all(r["text"].strip() and r["product"] for r in rows)
    dates = [r["created_at"] for r in rows]
    assert dates == sorted(dates) and all(d.year == 2024 for d in dates)


def test_dataset_text_is_messy(tmp_path):
    texts = pq.read_table(make_dataset(tmp_path, n_rows=200, n_files=1)[0])["text"].to_pylist()
    assert any(t != t.strip() for t in texts)
    assert any("  " in t or "\t" in t for t in texts)
    assert any(any(w.isupper() and len(w) > 1 for w in t.split()) for t in texts)
    assert any("!" in t for t in texts) and any("." in t for t in texts)


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path):
    first = make_dataset(tmp_path / "a", n_rows=40, n_files=2, seed=3)
    again = make_dataset(tmp_path / "b", n_rows=40, n_files=2, seed=3)
    other = make_dataset(tmp_path / "c", n_rows=40, n_files=2, seed=4)
    assert [f.read_bytes() for f in first] == [f.read_bytes() for f in again]
    assert pq.read_table(first[0])["text"] != pq.read_table(other[0])["text"]


def test_existing_files_are_kept_and_changed_parameters_rewrite(tmp_path):
    files = make_dataset(tmp_path, n_rows=30, n_files=3)
    stamps = [f.stat().st_mtime_ns for f in files]
    assert make_dataset(tmp_path, n_rows=30, n_files=3) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps

    files = make_dataset(tmp_path, n_rows=20, n_files=2)
    assert sorted(tmp_path.glob("*.parquet")) == files  # the old third part is gone
    assert sum(pq.read_metadata(f).num_rows for f in files) == 20


def test_dataset_rejects_more_files_than_rows(tmp_path):
    with pytest.raises(ValueError, match="n_files"):
        make_dataset(tmp_path, n_rows=2, n_files=3)


# -- text pipeline ---------------------------------------------------------------------------


@pytest.mark.parametrize(("inputs", "expected"), HAND_CHECKED)
def test_pipeline_on_hand_checked_rows(inputs, expected):
    result = pipeline.run(inputs=inputs)
    assert set(result) == OUTPUTS
    assert {name: result[name] for name in expected} == expected
    assert result["tokens"] == expected["clean_text"].split()


def test_map_matches_run_in_order_and_is_deterministic():
    columns = {name: [row[name] for row, _ in HAND_CHECKED] for name in HAND_CHECKED[0][0]}
    results = build_pipeline().map(inputs=columns, map_over=list(columns))
    assert [r["helpfulness"] for r in results] == [e["helpfulness"] for _, e in HAND_CHECKED]
    assert results == build_pipeline().map(inputs=columns, map_over=list(columns))


def test_feature_pipeline_runs_alone_in_its_own_names():
    result = feature_pipeline.run(inputs={"words": ["not", "bad", "not", "bad"], "raw": "!"})
    assert result == {"n_tokens": 4, "distinct_ratio": 0.5, "lexicon_score": 2, "exclamations": 1}


def test_build_pipeline_uses_the_given_engine_and_needs_the_three_columns():
    from hypernodes_daft import HypernodesEngine

    engine = HypernodesEngine()
    built = build_pipeline(engine=engine)
    assert built.engine is engine and built is not pipeline
    assert set(built.unfulfilled_args) == {"text", "product", "stars"}


# -- run_demo.py -----------------------------------------------------------------------------


def test_run_demo_script_end_to_end(tmp_path):
    out = tmp_path / "out" / "scored"
    command = [sys.executable, str(REPO_ROOT / "examples" / "run_demo.py"), "--rows", "200",
               "--data", str(tmp_path / "reviews"), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rows:     200" in done.stdout and "rows/s" in done.stdout  # the CLI's summary
    assert "| score_helpfulness |" in done.stdout.replace("  ", " ")  # per-node table
    preview = done.stdout.strip().splitlines()[-6:]  # header and the first 5 rows
    assert preview[0].split()[:3] == ["review_id", "product", "stars"]
    assert [line.split()[0] for line in preview[1:]] == ["1", "2", "3", "4", "5"]
    scored = pq.read_table(out).sort_by("review_id")
    assert scored.num_rows == 200
    assert {"review_id", "text", "product", "stars"} | OUTPUTS <= set(scored.column_names)
    assert scored["review_id"].to_pylist() == list(range(1, 201))
    helpfulness = scored["helpfulness"].to_pylist()
    assert all(0.0 <= h <= 1.0 for h in helpfulness) and len(set(helpfulness)) > 10
