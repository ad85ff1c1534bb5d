"""A rule-based process reward for clevr answers in stages: how consistent the steps are with the
answer's own caption and with each other. It never sees the ground truth, so it can pick among
candidates at test time (``--scorer reward:vrm.tasks.clevr.consistency:consistency``).

The caption is taken as the model saw the scene; every later statement is checked against it and
against the statements before it, the way the reasoning targets (`vrm.tasks.clevr.explain`) are
built:

- a check ("Checking for red: small red metal cube yes; ...") decides each candidate as its name
  (a filter), its coordinate against the start's (a relation, with ``place=xy`` captions) or its
  attribute against the start's (``same_*``) says; its candidates are all objects or a listing no
  step has read yet, and its coordinates are the caption's (within a pixel);
- a listing keeps what the check before it said yes to (without checks: what its filter keeps of
  all objects or of a listing before it); "Either" / "Both" unite / intersect two unread listings,
  and a check for "either" / "both" (``reasoning="merge_checks"``) decides each object by two;
- "That is the X" reads an unread listing of X alone; "Its colour is red" reads the earliest X
  found that no relation, ``same_*`` or query has read (a comparison's two queries read its two
  objects in the order they were found); a count counts a listing; an "any", a sum, a comparison
  and the conclusion follow from what came before, and every count and sum is read by a later step
  but the last, which is the conclusion (a number the question gives, "Take 3.", may go unread).

A program is a tree written in order, so a step may read an earlier result that is not the last one,
but each listing, object and number only once: the tree is what makes a skipped step or a merge of
the wrong two listings visible. CLEVR-Math's programs bend the rule (a listing both filtered and
counted, a number given and never used), so a count, an "any" and a filter without checks keep the
looser test: any listing so far. Every target holds throughout (a test, on each reasoning layout).

The reward is the share of statements that hold (1.0 with none to check yet). From the text alone
an error of perception (a caption that misreads the image) is invisible; a step that contradicts the
caption or the steps before it is not. `grounded` also checks the caption against the image, each
object drawn and compared (`vrm.tasks.clevr.grounding`), so a stage beam can choose among captions
too (``--scorer reward:vrm.tasks.clevr.consistency:grounded``).
"""

from __future__ import annotations

import re
from collections import Counter

from PIL import Image

from vrm.formats.structured import tagged
from vrm.tasks.clevr.explain import ATTRIBUTE, DIRECTIONS
from vrm.tasks.clevr.grounding import caption_fits

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

    def __init__(self, caption: str, image: Image.Image | None = None):
        head, _, body = caption.partition(": ")
        items = [m for part in body.rstrip(".").split("; ") if (m := CAPTION.fullmatch(part))]
        self.objects = [m.group(1) for m in items]
        self.coords: dict[str, list[tuple[int, int]]] = {}  # name -> centres (two objects may share a name)
        for m in items:
            if m.group(2):
                self.coords.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(3))))
        self.listings: list[list[str]] = []  # every listing so far
        self.sets: list[list[str]] = []  # those no step has read yet
        self.values: list = []
        self.unused: list = []  # the values no step has read yet
        self.taken: list = []  # the numbers a question gives ("Take 3."), which one may leave unread
        self.unread: list[str] = []  # the objects found ("That is the X") that no step has read yet
        self.pending: list[str] | None = None
        self.held = self.total = 0
        count = head.split()[0] if head else ""
        self.tally(bool(items) and count == str(len(items)) and len(items) == len(body.split("; ")))
        if image is not None and items and all(m.group(2) for m in items):  # the caption against the image
            fits, covered = caption_fits(image, [(*m.group(1).split(), int(m.group(2)), int(m.group(3)))
                                                 for m in items])
            for ok in (*fits, covered):
                self.tally(ok)

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
            self.read(start)
            axis = 0 if rel in ("left", "right") else 1
            self.tally(Counter(candidates) + Counter([start]) == Counter(self.objects))
            a = self.coordinate(start, axis, relate.group(3))
            for m in marks:
                b = self.coordinate(m.group(1), axis, m.group(2))
                if a is not None and b is not None:
                    self.tally((b < a if rel in ("left", "behind") else b > a) == (m.group(3) == "yes"))
        elif same := SAME.fullmatch(what):
            slot = SLOT[same.group(1)]
            self.read(same.group(2))
            start = same.group(2).split()
            self.tally(Counter(candidates) + Counter([same.group(2)]) == Counter(self.objects))
            for m in marks:
                self.tally((m.group(1).split()[slot] == start[slot]) == (m.group(3) == "yes"))
        elif what in ("either", "both"):  # a merge: its decisions follow two earlier listings
            self.tally(self.merges(what, candidates, self.pending))
        else:  # a filter: the value is one of the name's words
            self.tally(self.take(lambda s: Counter(s) == Counter(candidates)))
            for m in marks:
                self.tally((what in m.group(1).split()) == (m.group(3) == "yes"))

    def read(self, name: str | None = None) -> str | None:
        """Mark a found object read and return it: the latest named ``name`` (a relation's start), else
        the earliest found (a query's); None when there is none to read."""
        if name is None:
            return self.unread.pop(0) if self.unread else None
        if name in self.unread:
            del self.unread[len(self.unread) - 1 - self.unread[::-1].index(name)]
        return name

    def merges(self, what: str, candidates: list[str] | None, kept: list[str]) -> bool:
        """Whether two unread listings a, b (or all objects) explain a merge, and read them: "either"
        checks all objects and keeps a | b; "both" checks a and keeps a & b, naming no object more
        often than the caption does. Without ``candidates`` (a merge without checks) only what it
        keeps is matched."""
        if what == "either" and candidates is not None and Counter(candidates) != Counter(self.objects):
            return False
        if Counter(kept) - Counter(self.objects):  # "Either: a red cube, a red cube" with one red cube
            return False
        kept = set(kept)
        sources = [*self.sets, self.objects]
        for k, a in enumerate(sources):
            for j, b in enumerate(sources):
                if j == k or (what == "both" and candidates is not None and Counter(candidates) != Counter(a)):
                    continue
                if kept == (set(a) | set(b) if what == "either" else set(a) & set(b)):
                    for i in sorted({k, j} - {len(self.sets)}, reverse=True):  # all objects stay
                        self.sets.pop(i)
                    return True
        return False

    def value(self, v) -> None:
        self.values.append(v)
        self.unused.append(v)

    def use(self, *values) -> bool:
        """Read ``values`` (each a value no step has read yet): whether they all were."""
        ok = True
        for v in values:
            pool = self.unused if v in self.unused else self.taken
            if v in pool:
                pool.remove(v)
            else:
                ok = False
        return ok

    def has(self, fits, scene: bool = True) -> bool:
        """Whether any listing so far, read or not, or (with ``scene``) all objects ``fits``: the looser test."""
        return any(fits(s) for s in ([self.objects] if scene else []) + self.listings)

    def take(self, fits) -> bool:
        """Read the latest unread listing that ``fits``, else all objects (a scene step) if they fit.
        A program is a tree: each listing is read by one step, so a read listing is read no more."""
        for k in range(len(self.sets) - 1, -1, -1):
            if fits(self.sets[k]):
                del self.sets[k]
                return True
        return fits(self.objects)

    def listing(self, m: re.Match) -> None:
        value, listed = m.group(1), names(next(g for g in (m.group(2), m.group(3), m.group(4), m.group(6)) if g))
        if m.group(5) and self.pending is None:  # Either / Both without checks: of two unread listings
            self.tally(self.merges(m.group(5).lower(), None, listed))
        if self.pending is not None:  # what the check before it (a merge's too) said yes to
            self.tally(listed == self.pending)
        elif m.group(3) is not None or m.group(4) is not None:  # a relation without checks: of the last found
            if self.unread:
                self.unread.pop()
        elif value:  # a filter without checks: what it keeps of all objects or of an earlier listing
            self.tally(self.has(lambda s: Counter(n for n in s if value.lower() in n.split()) == Counter(listed)))
        self.pending = None
        self.sets.append(listed)
        self.listings.append(listed)

    def statement(self, s: str) -> None:
        if m := CHECK.fullmatch(s):
            return self.check(m.group(1), m.group(2))
        if m := LISTING.fullmatch(s):
            return self.listing(m)
        if m := re.fullmatch(rf"That is the ({NAME})\.", s):
            self.unread.append(m.group(1))
            return self.tally(self.take(lambda s: s == [m.group(1)]))
        if m := re.fullmatch(r"Its (\w+) is (\w+)\.", s):
            slot, found = SLOT.get(m.group(1)), self.read()
            self.value(m.group(2))
            return self.tally(slot is not None and found is not None and found.split()[slot] == m.group(2))
        if m := re.fullmatch(r"Count: (\d+)\.", s):
            self.value(int(m.group(1)))
            return self.tally(self.has(lambda s: len(s) == int(m.group(1))))
        if m := re.fullmatch(r"Any: (yes|no)\.", s):
            self.value(m.group(1))
            return self.tally(self.has(lambda s: bool(s) == (m.group(1) == "yes"), scene=False))
        if m := re.fullmatch(r"Take (\d+)\.", s):
            self.values.append(int(m.group(1)))
            self.taken.append(int(m.group(1)))
            return None
        if m := re.fullmatch(r"(\d+) ([-+]) (\d+) = (-?\d+)\.", s):
            a, b, c = int(m.group(1)), int(m.group(3)), int(m.group(4))
            ok = self.use(a, b) and c == (a - b if m.group(2) == "-" else a + b)
            self.value(c)
            return self.tally(ok)
        if m := re.fullmatch(r"Is (\d+) (less|more) than (\d+)\? (yes|no)\.", s):
            a, b = int(m.group(1)), int(m.group(3))
            ok = self.use(a, b) and ((a < b) if m.group(2) == "less" else (a > b)) == (m.group(4) == "yes")
            self.value(m.group(4))
            return self.tally(ok)
        if m := re.fullmatch(r"Are they equal\? (yes|no)\.", s):
            ok = len(self.unused) >= 2 and (self.unused[-2] == self.unused[-1]) == (m.group(1) == "yes")
            del self.unused[-2:]
            self.value(m.group(1))
            return self.tally(ok)
        if s.startswith("No single object fits"):
            return self.tally(self.has(lambda s: len(s) != 1, scene=False))
        self.tally(False)  # a sentence no step of the targets writes


def consistency(sample, completion: str, image: Image.Image | None = None) -> float:
    """The share of the completion's statements that hold (see the module docstring); ``sample`` is
    unused (the reward signature's first argument: no ground truth is read). With an ``image`` each
    object of an ``xy`` caption, and the caption's leaving nothing out, count as statements too
    (`vrm.tasks.clevr.grounding`).

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
    reading = Reading(caption, image)
    for s in sentences(tagged(completion, "REASONING", ("CONCLUSION",)) or ""):
        reading.statement(s)
    conclusion = tagged(completion, "CONCLUSION")
    if conclusion is not None:
        last = reading.values[-1] if reading.values else None  # the one value no step has read
        reading.tally(reading.unused == [last] and conclusion.strip() == str(last))
    return reading.held / reading.total


def grounded(sample, completion: str) -> float:
    """`consistency` with the caption checked against the picture: the sample's image, the input the
    model saw (its answer and trace are never read). ``--scorer reward:vrm.tasks.clevr.consistency:grounded``"""
    return consistency(sample, completion, getattr(sample, "image", None))
