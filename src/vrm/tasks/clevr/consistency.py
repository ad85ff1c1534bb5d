"""A rule-based process reward for clevr answers in stages: how consistent the steps are with the
answer's own caption and with each other. It never sees the ground truth, so it can pick among
candidates at test time (``--scorer reward:vrm.tasks.clevr.consistency:consistency``).

The caption is taken as the model saw the scene; every later statement is checked against it and
against the statements before it, the way the reasoning targets (`vrm.tasks.clevr.explain`) are
built:

- a check ("Checking for red: small red metal cube yes; ...") decides each candidate as its name
  (a filter), its coordinate against the start's (a relation, with ``place=xy`` captions) or its
  attribute against the start's (``same_*``) says; its candidates are a set the answer has had
  (all objects, or a listing before it) and its coordinates are the caption's (within a pixel);
- a listing keeps what the check before it said yes to (without checks: what its filter keeps of
  all objects or of a listing before it); "Either" / "Both" unite / intersect two listings, and a
  check for "either" / "both" (``reasoning="merge_checks"``) decides each object by two listings;
- "That is the X" follows a listing of X alone; "Its colour is red" reads such an X; a count
  counts a listing; an "any", a sum, a comparison and the conclusion follow from what came before.

A program is a tree written in order, so a step may read any earlier step's result, not only the
last one: a check's candidates, a count, a union and a query are matched against any earlier
listing (or all objects), the looser test that holds for every target.

The reward is the share of statements that hold (1.0 with none to check yet). An error of
perception (a caption that misreads the image) is invisible to it; a step that contradicts the
caption or the steps before it is not.
"""

from __future__ import annotations

import re
from collections import Counter

from vrm.formats.structured import tagged
from vrm.tasks.clevr.explain import ATTRIBUTE, DIRECTIONS

NAME = r"\w+ \w+ \w+ \w+"  # size colour material shape
SLOT = {"size": 0, "colour": 1, "material": 2, "shape": 3}  # words of a name, by the steps' attribute words
RELATION = {words: rel for rel, words in DIRECTIONS.items()}
CAPTION = re.compile(rf"an? ({NAME})(?: at x (\d+) y (\d+)| .+)?")
CHECK = re.compile(r"Checking for (.+?): (.+)\.")
CHECKED = re.compile(rf"({NAME})(?: at [xy] (\d+))? (yes|no)")
RELATE = re.compile(rf"things ({'|'.join(RELATION)}) the ({NAME})(?: at [xy] (\d+))?")
SAME = re.compile(rf"same ({'|'.join(ATTRIBUTE.values())}) as the ({NAME})")
# A step's coordinate holds within one pixel of the caption's: a model reads it off the image again
# and rounds it either way. Counted as slips, such copies buried the real ones: on the shipped model's
# 1,000 answers this tolerance makes 140 more fully consistent, 134 of them right.
PIXEL = 1
LISTING = re.compile(r"(.+?) ones: (.+)\.|Things .+ it: (.+)\.|Same \w+ as it: (.+)\.|(Either|Both): (.+)\.")


def sentences(text: str) -> list[str]:
    """``"Red ones: a. Count: 1."`` -> ``["Red ones: a.", "Count: 1."]``"""
    return [s for s in re.split(r"(?<=\.) ", text.strip()) if s]


def names(listed: str) -> list[str]:
    return [] if listed == "none" else listed.split(", ")


class Reading:
    """The state of an answer read so far: its objects, listings and values, and the tally."""

    def __init__(self, caption: str):
        head, _, body = caption.partition(": ")
        items = [m for part in body.rstrip(".").split("; ") if (m := CAPTION.fullmatch(part))]
        self.objects = [m.group(1) for m in items]
        self.coords: dict[str, list[tuple[int, int]]] = {}  # name -> centres (two objects may share a name)
        for m in items:
            if m.group(2):
                self.coords.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(3))))
        self.sets: list[list[str]] = []
        self.values: list = []
        self.uniques: list[str] = []
        self.pending: list[str] | None = None
        self.held = self.total = 0
        count = head.split()[0] if head else ""
        self.tally(bool(items) and count == str(len(items)) and len(items) == len(body.split("; ")))

    def tally(self, ok: bool) -> None:
        self.held += bool(ok)
        self.total += 1

    def coordinate(self, name: str, axis: int, value: str | None) -> int | None:
        """The object's coordinate on ``axis``: as the step states it (tallied against the caption's,
        within `PIXEL`), else the caption's when one object has that name; None when unknown."""
        known = [c[axis] for c in self.coords.get(name, [])]
        if value is not None:
            self.tally(any(abs(int(value) - k) <= PIXEL for k in known))
            return int(value)
        return known[0] if len(known) == 1 else None

    def check(self, what: str, body: str) -> None:
        marks = [CHECKED.fullmatch(part) for part in ([] if body == "none" else body.split("; "))]
        if not all(marks):
            return self.tally(False)
        candidates = [m.group(1) for m in marks]
        self.pending = [m.group(1) for m in marks if m.group(3) == "yes"]
        if relate := RELATE.fullmatch(what):
            rel, start = RELATION[relate.group(1)], relate.group(2)
            axis = 0 if rel in ("left", "right") else 1
            self.tally(Counter(candidates) + Counter([start]) == Counter(self.objects))
            a = self.coordinate(start, axis, relate.group(3))
            for m in marks:
                b = self.coordinate(m.group(1), axis, m.group(2))
                if a is not None and b is not None:
                    self.tally((b < a if rel in ("left", "behind") else b > a) == (m.group(3) == "yes"))
        elif same := SAME.fullmatch(what):
            slot = SLOT[same.group(1)]
            start = same.group(2).split()
            self.tally(Counter(candidates) + Counter([same.group(2)]) == Counter(self.objects))
            for m in marks:
                self.tally((m.group(1).split()[slot] == start[slot]) == (m.group(3) == "yes"))
        elif what in ("either", "both"):  # a merge: its decisions follow two earlier listings
            self.tally(self.merges(what, candidates, set(self.pending)))
        else:  # a filter: the value is one of the name's words
            self.tally(self.is_set(candidates))
            for m in marks:
                self.tally((what in m.group(1).split()) == (m.group(3) == "yes"))

    def merges(self, what: str, candidates: list[str], kept: set[str]) -> bool:
        """Whether some two earlier listings a, b explain a merge's check: "either" checks all objects
        and keeps a | b; "both" checks a and keeps a & b."""
        if what == "either" and Counter(candidates) != Counter(self.objects):
            return False
        for k, a in enumerate(self.sets):
            for b in self.sets[:k] + self.sets[k + 1:]:
                if what == "either" and kept == set(a) | set(b):
                    return True
                if what == "both" and Counter(candidates) == Counter(a) and kept == set(a) & set(b):
                    return True
        return False

    def is_set(self, listed: list[str]) -> bool:
        """Whether ``listed`` is, as a multiset, all objects or an earlier listing."""
        return any(Counter(listed) == Counter(s) for s in (self.objects, *self.sets))

    def listing(self, m: re.Match) -> None:
        value, listed = m.group(1), names(next(g for g in (m.group(2), m.group(3), m.group(4), m.group(6)) if g))
        if m.group(5):  # Either / Both: of two earlier listings (value is None here)
            pairs = [(set(a), set(b)) for k, a in enumerate(self.sets) for b in self.sets[k + 1:]]
            self.tally(any(set(listed) == (a | b if m.group(5) == "Either" else a & b) for a, b in pairs))
        if self.pending is not None:  # what the check before it (a merge's too) said yes to
            self.tally(listed == self.pending)
        elif value:  # a filter without checks: what it keeps of all objects or of an earlier listing
            kept = [[n for n in s if value.lower() in n.split()] for s in (self.objects, *self.sets)]
            self.tally(any(Counter(listed) == Counter(k) for k in kept))
        self.pending = None
        self.sets.append(listed)

    def statement(self, s: str) -> None:
        if m := CHECK.fullmatch(s):
            return self.check(m.group(1), m.group(2))
        if m := LISTING.fullmatch(s):
            return self.listing(m)
        if m := re.fullmatch(rf"That is the ({NAME})\.", s):
            self.uniques.append(m.group(1))
            return self.tally([m.group(1)] in self.sets)
        if m := re.fullmatch(r"Its (\w+) is (\w+)\.", s):
            slot = SLOT.get(m.group(1))
            self.values.append(m.group(2))
            return self.tally(slot is not None and any(u.split()[slot] == m.group(2) for u in self.uniques))
        if m := re.fullmatch(r"Count: (\d+)\.", s):
            self.values.append(int(m.group(1)))
            return self.tally(any(len(s) == int(m.group(1)) for s in (self.objects, *self.sets)))
        if m := re.fullmatch(r"Any: (yes|no)\.", s):
            self.values.append(m.group(1))
            return self.tally(any(bool(s) == (m.group(1) == "yes") for s in self.sets))
        if m := re.fullmatch(r"Take (\d+)\.", s):
            self.values.append(int(m.group(1)))
            return None
        if m := re.fullmatch(r"(\d+) ([-+]) (\d+) = (-?\d+)\.", s):
            a, b, c = int(m.group(1)), int(m.group(3)), int(m.group(4))
            ok = c == (a - b if m.group(2) == "-" else a + b) and Counter([a, b]) <= Counter(self.values)
            self.values.append(c)
            return self.tally(ok)
        if m := re.fullmatch(r"Is (\d+) (less|more) than (\d+)\? (yes|no)\.", s):
            a, b = int(m.group(1)), int(m.group(3))
            self.values.append(m.group(4))
            return self.tally(((a < b) if m.group(2) == "less" else (a > b)) == (m.group(4) == "yes"))
        if m := re.fullmatch(r"Are they equal\? (yes|no)\.", s):
            ok = len(self.values) >= 2 and (self.values[-2] == self.values[-1]) == (m.group(1) == "yes")
            self.values.append(m.group(1))
            return self.tally(ok)
        if s.startswith("No single object fits"):
            return self.tally(any(len(s) != 1 for s in self.sets))
        self.tally(False)  # a sentence no step of the targets writes


def consistency(sample, completion: str) -> float:
    """The share of the completion's statements that hold (see the module docstring); ``sample`` is
    unused (the reward signature's first argument: no ground truth is read).

    >>> caption = "<CAPTION>3 objects: a small red metal cube at x 10 y 5; a large blue rubber sphere at x 30 y 20; " \\
    ...     "a large red metal cube at x 50 y 40.</CAPTION>"
    >>> right = caption + "<REASONING>Checking for small: small red metal cube yes; large blue rubber sphere no; " \\
    ...     "large red metal cube no. Small ones: small red metal cube. Count: 1.</REASONING><CONCLUSION>1</CONCLUSION>"
    >>> consistency(None, right), consistency(None, right.replace("Count: 1", "Count: 2"))  # 8 statements
    (1.0, 0.75)
    """
    caption = tagged(completion, "CAPTION", ("REASONING",))
    if caption is None:
        return 1.0
    reading = Reading(caption)
    for s in sentences(tagged(completion, "REASONING", ("CONCLUSION",)) or ""):
        reading.statement(s)
    conclusion = tagged(completion, "CONCLUSION")
    if conclusion is not None:
        reading.tally(bool(reading.values) and conclusion.strip() == str(reading.values[-1]))
    return reading.held / reading.total
