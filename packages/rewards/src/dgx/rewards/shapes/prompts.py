"""GenEval-style prompts for the shapes world, with GenEval's metadata format and splits.

Metadata follows GenEval's ``evaluation_metadata.jsonl``: ``tag``, ``prompt``,
``include`` (``class``, ``count``, optional ``color``, optional ``position`` =
``[relation, index of an earlier include]``) and ``exclude`` (``class``, ``count``).
"""

from __future__ import annotations

import itertools
import random

from dgx.rewards.shapes.render import COLORS, SHAPES

TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
RELATIONS = ["left of", "right of", "above", "below"]
NUMBERS = {2: "two", 3: "three", 4: "four"}
SPLIT_SEED = 20260120
TEST_FRACTION = 1 / 3
MAX_TEST_PER_TAG = 60


def all_prompts() -> list[dict]:
    """Every prompt of the grammar, in a fixed order."""
    out: list[dict] = []
    for c in SHAPES:
        out.append(_meta("single_object", f"a photo of a {c}", [{"class": c, "count": 1}]))
    for a, b in itertools.permutations(SHAPES, 2):
        out.append(
            _meta("two_object", f"a photo of a {a} and a {b}", [{"class": a, "count": 1}, {"class": b, "count": 1}])
        )
    for c, (n, word) in itertools.product(SHAPES, NUMBERS.items()):
        out.append(
            _meta("counting", f"a photo of {word} {c}s", [{"class": c, "count": n}], [{"class": c, "count": n + 1}])
        )
    for col, c in itertools.product(COLORS, SHAPES):
        out.append(_meta("colors", f"a photo of {_a(col)} {col} {c}", [{"class": c, "count": 1, "color": col}]))
    for (a, b), rel in itertools.product(itertools.permutations(SHAPES, 2), RELATIONS):
        # GenEval attaches the relation to the first-named object, relative to group 0.
        inc = [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}]
        out.append(_meta("position", f"a photo of a {a} {rel} a {b}", inc))
    for (ca, cb), (a, b) in itertools.product(itertools.permutations(COLORS, 2), itertools.permutations(SHAPES, 2)):
        inc = [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]
        out.append(_meta("color_attr", f"a photo of {_a(ca)} {ca} {a} and {_a(cb)} {cb} {b}", inc))
    return out


def _meta(tag: str, prompt: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    return {"tag": tag, "prompt": prompt, "include": include, "exclude": exclude or []}


def split(name: str) -> list[dict]:
    """The fixed ``"train"`` or ``"test"`` split; no prompt is in both.

    Per tag, ``TEST_FRACTION`` of the prompts (at least two, at most ``MAX_TEST_PER_TAG``)
    go to test, chosen with a fixed seed.
    """
    if name not in ("train", "test"):
        raise ValueError(f"unknown split {name!r}; expected 'train' or 'test'")
    rng = random.Random(SPLIT_SEED)
    train, test = [], []
    for tag in TAGS:
        items = [m for m in all_prompts() if m["tag"] == tag]
        rng.shuffle(items)
        k = min(MAX_TEST_PER_TAG, max(2, round(len(items) * TEST_FRACTION)))
        test += items[:k]
        train += items[k:]
    return train if name == "train" else test


def one_word_neighbours(prompts: list[dict]) -> dict[str, list[dict]]:
    """Per prompt, the prompts of its tag whose caption differs in exactly one word, articles ignored
    (another colour, shape, number or relation); used to train a model on captions that get one detail wrong."""
    words = {m["prompt"]: _content_words(m["prompt"].split()) for m in prompts}

    def one_apart(a: list[str], b: list[str]) -> bool:
        return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1

    return {
        m["prompt"]: [o for o in prompts if o["tag"] == m["tag"] and one_apart(words[o["prompt"]], words[m["prompt"]])]
        for m in prompts
    }


CHANGE_KINDS = {
    **{c: "colour" for c in COLORS},
    **{n: "number" for n in NUMBERS.values()},
    **{w: "relation" for r in RELATIONS for w in r.split()[:1]},
}


def change_kind(a: str, b: str) -> str:
    """What differs between two captions one word apart: ``colour``, ``number``, ``relation`` or ``shape``."""
    word = next(x for x, y in zip(_content_words(a.split()), _content_words(b.split())) if x != y)
    return CHANGE_KINDS.get(word, "shape")


# A fixed involution of the grammar's words: shapes and colours in pairs (relations are left alone: with the shapes
# swapped, "a circle left of a square" and its swap "a square right of a circle" would be the same scene).
SWAP = {
    a: b
    for x, y in [
        ("circle", "square"),
        ("triangle", "diamond"),
        ("red", "blue"),
        ("orange", "purple"),
        ("yellow", "green"),
        ("pink", "brown"),
        ("black", "white"),
    ]
    for a, b in [(x, y), (y, x)]
}


def swapped(prompts: list[dict], swap: dict[str, str] = SWAP) -> dict[str, dict]:
    """Per prompt, the prompt whose caption is this one with every word (plurals too) mapped by ``swap``,
    articles ignored; used to train a model with one error shared by all prompts (a systematic bias)."""

    def word(w: str) -> str:
        if w in swap:
            return swap[w]
        if w.endswith("s") and w[:-1] in swap:  # plural shapes in counting prompts
            return swap[w[:-1]] + "s"
        return w

    index = {tuple(_content_words(m["prompt"].split())): m for m in prompts}
    return {m["prompt"]: index[tuple(_content_words([word(w) for w in m["prompt"].split()]))] for m in prompts}


def vocabulary() -> list[str]:
    """Every word the grammar uses (for the shapes model's tokenizer)."""
    words = {w for m in all_prompts() for w in m["prompt"].split()}
    return sorted(words)


def _content_words(words: list[str]) -> list[str]:
    """The words without the articles, which change with the next word ("a red", "an orange")."""
    return [w for w in words if w not in ("a", "an")]


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
