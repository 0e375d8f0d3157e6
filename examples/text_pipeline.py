"""Score product reviews for helpfulness: a pipeline of plain, typed functions.

    from examples.text_pipeline import pipeline

    pipeline.run(inputs={"text": "GREAT mat!!", "product": "yoga mat", "stars": 5})
    # {'clean_text': 'great mat', 'category': 'fitness', 'tokens': ['great', 'mat'],
    #  'token_count': 2, 'distinct_ratio': 1.0, 'sentiment': 1, 'exclamations': 2,
    #  'helpfulness': 0.54}

The steps: clean the text -> tokenize -> features (a nested pipeline, `feature_pipeline`) ->
look up the product's category (async, a stand-in for a service call) -> helpfulness score.
"""

from __future__ import annotations

import asyncio
import string
from itertools import pairwise

from hypernodes_daft import Pipeline, PipelineNode, node

POSITIVE_WORDS = frozenset(
    {"great", "excellent", "perfect", "sturdy", "comfortable", "amazing", "solid", "love",
     "recommend", "best", "good", "happy", "fast", "reliable"}
)  # fmt: skip
NEGATIVE_WORDS = frozenset(
    {"terrible", "flimsy", "awful", "cheap", "noisy", "useless", "disappointing", "broke",
     "refund", "returned", "waste", "worst", "bad", "slow"}
)  # fmt: skip
# Apostrophes are dropped before matching, so "didn't" arrives here as "didnt".
NEGATORS = frozenset(
    {"not", "no", "never", "dont", "didnt", "doesnt", "isnt", "wasnt", "wont", "cant"}
)

CATALOG = {
    "trail running shoes": "fitness",
    "yoga mat": "fitness",
    "espresso machine": "kitchen",
    "cast iron skillet": "kitchen",
    "electric kettle": "kitchen",
    "noise cancelling headphones": "electronics",
    "mechanical keyboard": "electronics",
    "phone case": "electronics",
    "desk lamp": "home",
    "water bottle": "outdoors",
    "backpack": "outdoors",
}
UNKNOWN_CATEGORY = "other"

FULL_LENGTH = 20  # tokens; longer reviews earn no extra depth
MAX_SHOUTING = 4  # exclamation marks that count against a review

# Apostrophes vanish ("don't" -> "dont"); any other punctuation separates words.
_PUNCTUATION = str.maketrans(
    {**{c: " " for c in string.punctuation}, "'": None, "\N{RIGHT SINGLE QUOTATION MARK}": None}
)


# -- text --------------------------------------------------------------------------------------


@node(output_name="clean_text")
def clean_text(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace.

    clean_text("  Great   SKILLET, don't wait!! ")  # 'great skillet dont wait'
    """
    return " ".join(text.lower().translate(_PUNCTUATION).split())


@node(output_name="tokens")
def tokenize(clean_text: str) -> list[str]:
    """Split cleaned text into words: tokenize("great skillet")  # ['great', 'skillet']"""
    return clean_text.split()


# -- features (the inner pipeline; its names are generic, the outer pipeline renames them) ----


@node(output_name="n_tokens")
def count_tokens(words: list[str]) -> int:
    """count_tokens(["a", "b"])  # 2"""
    return len(words)


@node(output_name="distinct_ratio")
def distinct_ratio(words: list[str]) -> float:
    """Share of distinct words, 4 decimals; 0.0 for no words.

    distinct_ratio(["so", "so", "good"])  # 0.6667
    """
    return round(len(set(words)) / len(words), 4) if words else 0.0


@node(output_name="lexicon_score")
def lexicon_score(words: list[str]) -> int:
    """Positive minus negative lexicon words; a negator right before a word flips it.

    lexicon_score(["not", "great", "but", "sturdy"])  # -1 + 1 = 0
    """
    score = 0
    for previous, word in pairwise(["", *words]):
        polarity = (word in POSITIVE_WORDS) - (word in NEGATIVE_WORDS)
        score += -polarity if previous in NEGATORS else polarity
    return score


@node(output_name="exclamations")
def count_exclamations(raw: str) -> int:
    """Exclamation marks in the original text: count_exclamations("wow!!")  # 2"""
    return raw.count("!")


feature_pipeline = Pipeline(
    nodes=[count_tokens, distinct_ratio, lexicon_score, count_exclamations], name="features"
)


def feature_node() -> PipelineNode:
    """`feature_pipeline` as one node of the outer pipeline, in the outer pipeline's names."""
    return feature_pipeline.as_node(
        input_mapping={"tokens": "words", "text": "raw"},  # outer -> inner
        output_mapping={  # inner -> outer
            "n_tokens": "token_count",
            "distinct_ratio": "distinct_ratio",
            "lexicon_score": "sentiment",
            "exclamations": "exclamations",
        },
        name="features",
    )


# -- enrichment and score ---------------------------------------------------------------------


@node(output_name="category")
async def lookup_category(product: str) -> str:
    """The product's category, or "other".

    asyncio.run(lookup_category("Yoga Mat"))  # 'fitness'
    """
    await asyncio.sleep(0)  # where a real catalog service would be awaited
    return CATALOG.get(product.strip().lower(), UNKNOWN_CATEGORY)


@node(output_name="helpfulness")
def score_helpfulness(
    token_count: int, distinct_ratio: float, sentiment: int, exclamations: int, stars: int
) -> float:
    """A 0..1 score, 4 decimals: long, varied reviews whose tone matches their stars help most;
    shouting costs a little.

    score_helpfulness(8, 1.0, 3, 2, 5)  # 0.4*8/20 + 0.3*1.0 + 0.3*1.0 - 0.05*2 = 0.66
    """
    depth = min(token_count, FULL_LENGTH) / FULL_LENGTH
    shouting = 0.05 * min(exclamations, MAX_SHOUTING)
    score = 0.4 * depth + 0.3 * distinct_ratio + 0.3 * _agreement(sentiment, stars) - shouting
    return round(min(max(score, 0.0), 1.0), 4)


def _agreement(sentiment: int, stars: int) -> float:
    """1.0 when the text's tone matches the stars, 0.0 when it contradicts them, else 0.5."""
    tone = (sentiment > 0) - (sentiment < 0)
    expected = 1 if stars >= 4 else -1 if stars <= 2 else 0
    if tone == expected:
        return 1.0
    return 0.5 if 0 in (tone, expected) else 0.0


# -- the pipeline ------------------------------------------------------------------------------


def build_pipeline(engine: object = None) -> Pipeline:
    """A new review-scoring pipeline; inputs `text`, `product`, `stars`.

    build_pipeline().map(
        inputs={"text": ["ok", "Love it!"], "product": ["yoga mat"] * 2, "stars": [3, 5]},
        map_over=["text", "product", "stars"],
    )
    """
    return Pipeline(
        nodes=[clean_text, tokenize, feature_node(), lookup_category, score_helpfulness],
        engine=engine,
        name="review_scoring",
    )


pipeline = build_pipeline()
