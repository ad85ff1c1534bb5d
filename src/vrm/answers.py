"""Answer normalisation and matching, shared by every task's scorer and by evaluation.

Text answers are compared after normalisation (case, punctuation, articles, number words);
numeric answers are checked by `math_verify`, with the gold answer first (verify is not
symmetric). An empty prediction never matches.
"""

from __future__ import annotations

import re

from math_verify import parse, verify

_NUMBER_WORDS = {
    "zero": "0", "none": "0", "no objects": "0", "one": "1", "two": "2", "three": "3",
    "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
    "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
    "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
}
_SYNONYMS = {"colour": "color", "grey": "gray", "true": "yes", "false": "no"}
_ARTICLES = {"a", "an", "the"}
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_ANSWER_IS = re.compile(r"the answer is\s*:?\s*(.+?)\s*\.?\s*$", re.IGNORECASE | re.DOTALL)


def normalize_answer(text: str) -> str:
    """Canonical form of a short answer.

    >>> normalize_answer("  The Three. ")
    '3'
    >>> normalize_answer("Grey")
    'gray'
    >>> normalize_answer("The answer is B.")
    'b'
    >>> normalize_answer("A"), normalize_answer("(a)")  # a choice letter is not an article
    ('a', 'a')
    """
    text = str(text).strip()
    m = _ANSWER_IS.search(text)
    if m:
        text = m.group(1)
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s.]", " ", text)
    text = re.sub(r"\.(?!\d)", " ", text)
    words = text.split()
    if words != ["a"]:  # a lone "a" is a choice letter, not an article
        words = [w for w in words if w not in _ARTICLES]
    text = " ".join(_SYNONYMS.get(w, w) for w in words)
    return _NUMBER_WORDS.get(text, text)


def answers_match(prediction: str, gold: str) -> bool:
    """Whether a predicted short answer means the gold one.

    >>> answers_match("three", "3"), answers_match("3.0", "3"), answers_match("", "0")
    (True, True, False)
    >>> answers_match("Red", "red"), answers_match("redd", "red")
    (True, False)
    """
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if not pred:
        return False
    if _NUMERIC.match(ref) and _NUMERIC.match(pred):
        gold_parsed, pred_parsed = parse(ref), parse(pred)
        if not gold_parsed:
            raise ValueError(f"gold answer {gold!r} is numeric but math_verify cannot parse it")
        return bool(pred_parsed) and bool(verify(gold_parsed, pred_parsed))
    return pred == ref
