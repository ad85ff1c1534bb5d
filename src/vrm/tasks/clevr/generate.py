"""Instantiating CLEVR and CLEVR-Math question templates on a scene (vrm's own search).

A template holds text variants with typed slots (``<Z>`` size, ``<C>`` colour, ``<M>`` material,
``<S>`` shape, ``<R>`` relation) and a program template whose composite nodes (``filter_unique``,
``relate_filter_count`` ...) expand into plain CLEVR functions once their slots are filled. The
search fills slots node by node in a seeded random order, running every new node on the scene as
it goes, and backtracks as soon as a ``unique`` fails or a constraint breaks:

- ``NULL [p]``: slot p stays empty; ``NEQ`` / ``TYPE_NEQ [p, q]``: slots differ;
- ``OUT_NEQ [i, j]``: template nodes i and j give different outputs;
- ``CONST_GT [i, c]`` / ``CONST_LEQ [i, c]``: node i's output is at least / at most c. (CLEVR-Math's
  reference generator rejects only ``output < c`` for ``CONST_GT``, and its dataset was made so.)

As in CLEVR, relate+filter options whose relation changes nothing are kept to a tenth, filters
that match nothing are added so that counts of zero and "no" answers occur, and programs from
templates with a raw ``relate`` node are rejected as degenerate when replacing any relation by
the whole scene leaves the answer unchanged. Answers are balanced per question, with no state
kept between samples: a yes/no question is asked for a yes or a no fixed in advance (so both are
equally likely), any other picks its answer uniformly among those of the first few valid
instantiations found.

Departures from the reference generator, all deliberate: a composite ``filter`` with fewer than
four slots (CLEVR-Math's ``adversarial`` family) filters on the attributes its slots name (the
reference paired them with size/colour/... by position); a ``NEQ`` on two node indices (rather
than slot names; the reference ignored it) means ``OUT_NEQ``; CLEVR-Math's number ``X`` (the
``choose`` node) is searched over like a slot rather than drawn once.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from vrm.tasks.clevr.data import ClevrData, Template
from vrm.tasks.clevr.executor import related, run_node
from vrm.tasks.clevr.scene import RELATIONS

ATTRIBUTE_OF = {"Size": "size", "Color": "color", "Material": "material", "Shape": "shape"}
COMPOSITE = {"filter", "filter_unique", "filter_count", "filter_exist",
             "relate_filter", "relate_filter_unique", "relate_filter_count", "relate_filter_exist"}
BOOLEAN = {"exist", "filter_exist", "relate_filter_exist", "equal_integer", "less_than", "greater_than",
           "equal_color", "equal_shape", "equal_size", "equal_material", "equal_object"}
TRIVIAL_FRACTION = 0.1
CANDIDATES = 4
BUDGET = 600
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_A_VOWEL = re.compile(r"\b([Aa]) (?=[aeiou])")


@dataclass
class Question:
    """An instantiated template: the text, the CLEVR program, every node's output, the answer."""

    text: str
    program: list[dict]
    outputs: list
    template: Template
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> Any:
        return self.outputs[-1]


@dataclass
class _State:
    nodes: list[dict]
    outputs: list
    values: dict[str, Any]
    where: dict[int, int]  # template node index -> program node index
    next: int


def _filter_options(objects: list[dict], idxs: list[int], attrs: list[str]) -> dict[tuple, list[int]]:
    """Every combination of the objects' attribute values (None = not filtered) -> matching indices."""
    options: dict[tuple, list[int]] = {}
    k = len(attrs)
    for i in idxs:
        vals = [objects[i][a] for a in attrs]
        for mask in range(1 << k):
            key = tuple(v if mask >> b & 1 else None for b, v in enumerate(vals))
            options.setdefault(key, []).append(i)
    return options


def _add_empty(options: dict, domains: list[tuple], n: int, rng: random.Random) -> None:
    """Add up to n filter combinations that match nothing."""
    target = len(options) + n
    for _ in range(20 * n):
        if len(options) >= target:
            return
        key = tuple(rng.choice(d + (None,)) for d in domains)
        if any(v is not None for v in key):
            options.setdefault(key, [])


class _Search:
    """One template on one scene: a seeded depth-first search over slot fillings."""

    def __init__(self, template: Template, scene: dict, data: ClevrData, rng: random.Random):
        self.t, self.scene, self.data, self.rng = template, scene, data, rng
        self.objects = scene["objects"]
        self.has_relate = any(n["type"] == "relate" for n in template.nodes)
        self._options_cache: dict[tuple, dict[tuple, list[int]]] = {}

    def _filter_options(self, idxs: list[int], attrs: list[str]) -> dict[tuple, list[int]]:
        key = (tuple(idxs), tuple(attrs))
        if key not in self._options_cache:
            self._options_cache[key] = _filter_options(self.objects, idxs, attrs)
        return dict(self._options_cache[key])

    def run(self, want: int = CANDIDATES, budget: int = BUDGET, target: Any = None) -> list[_State]:
        """Up to ``want`` valid instantiations, or with a ``target`` answer the first that gives it.

        At most ``budget`` states are visited; a state that can only lead to degenerate questions
        is dropped as soon as it is reached."""
        first = self.t.nodes[0]
        node = {"type": first["type"], "inputs": [], "value_inputs": []}
        root = _State([node], [run_node(node, [], self.scene)], {}, {0: 0}, 1)
        stack: list[Callable[[], _State | None]] = [lambda: root]
        found: list[_State] = []
        steps = 0
        while stack and steps < budget and (target is not None or len(found) < want):
            state = stack.pop()()  # children are built only when the search reaches them
            steps += 1
            if state is None or not self._satisfied(state) or (self.has_relate and self._degenerate(state)):
                continue
            if state.next == len(self.t.nodes):
                found.append(state)
                if target is not None and state.outputs[-1] == target:
                    return [state]
                continue
            children = self._expand(state)
            self.rng.shuffle(children)
            stack.extend(children)
        return found

    # -- checks -------------------------------------------------------------------------------
    def _satisfied(self, s: _State) -> bool:
        for c in self.t.constraints:
            kind, p = c["type"], c["params"]
            if kind == "NULL":
                if p[0] in s.values and s.values[p[0]] is not None:
                    return False
            elif kind in ("NEQ", "TYPE_NEQ") and isinstance(p[0], str):
                if p[0] in s.values and p[1] in s.values and s.values[p[0]] == s.values[p[1]]:
                    return False
            elif kind in ("OUT_NEQ", "NEQ"):
                i, j = s.where.get(p[0]), s.where.get(p[1])
                if i is not None and j is not None and s.outputs[i] == s.outputs[j]:
                    return False
            elif kind in ("CONST_GT", "CONST_LEQ", "CONST_NEQ"):
                i = s.where.get(p[0])
                if i is None:
                    continue
                out = s.outputs[i]
                if (kind == "CONST_GT" and out < p[1]) or (kind == "CONST_LEQ" and out > p[1]) \
                        or (kind == "CONST_NEQ" and out == p[1]):
                    return False
            else:
                raise ValueError(f"{self.t.file}[{self.t.index}]: unknown constraint {kind!r}")
        return True

    def _live(self, s: _State) -> list[int]:
        """Program nodes whose outputs the rest of the question can still read (at the end: the answer)."""
        nodes = self.t.nodes
        if s.next == len(nodes):
            return [s.where[len(nodes) - 1]]
        return sorted({s.where[i] for n in nodes[s.next:] for i in n["inputs"] if i < s.next})

    def _degenerate(self, s: _State) -> bool:
        """Whether replacing some relate node by the whole scene changes nothing the question can
        still read: then every completion of this state is degenerate (checked early to prune)."""
        live = None
        for idx, node in enumerate(s.nodes):
            if node["type"] != "relate":
                continue
            live = self._live(s) if live is None else live
            outs = s.outputs[:idx] + [list(range(len(self.objects)))]
            for later in s.nodes[idx + 1:]:
                outs.append(run_node(later, outs, self.scene))
            if all(outs[i] == s.outputs[i] for i in live if i >= idx):
                return True
        return False

    # -- expansion ----------------------------------------------------------------------------
    def _child(self, s: _State, new_nodes: list[dict], values: dict) -> _State | None:
        """Append nodes (running each); None if one fails. The last new node stands for the template node."""
        outputs = list(s.outputs)
        nodes = s.nodes + new_nodes
        for node in new_nodes:
            out = run_node(node, outputs, self.scene)
            if out is None:
                return None
            outputs.append(out)
        where = dict(s.where)
        where[s.next] = len(nodes) - 1
        return _State(nodes, outputs, values, where, s.next + 1)

    def _expand(self, s: _State) -> list[Callable[[], _State | None]]:
        """The ways to fill the next template node, each a function that builds the child state."""
        tnode = self.t.nodes[s.next]
        kind = tnode["type"]
        inputs = [s.where[i] for i in tnode["inputs"]]
        slots = tnode.get("side_inputs") or []
        if kind in COMPOSITE:
            return [partial(self._composite, s, kind, inputs[0], slots, key)
                    for key, _ in self._options(s, kind, inputs[0], slots)]
        if kind == "choose":
            n = len(s.outputs[inputs[0]])
            return [partial(self._child, s, [{"type": kind, "inputs": inputs, "value_inputs": [str(x)]}], s.values)
                    for x in (range(1, n + 1) if n else [0])]
        if slots:
            name = slots[0]
            return [partial(self._child, s, [{"type": kind, "inputs": inputs, "value_inputs": [v]}],
                            {**s.values, name: v})
                    for v in self.data.types[self.t.params[name]]]
        return [partial(self._child, s, [{"type": kind, "inputs": inputs, "value_inputs": []}], s.values)]

    def _options(self, s: _State, kind: str, source: int, slots: list[str]) -> list[tuple[tuple, list]]:
        """(slot values, objects matched) pairs to try for a composite node."""
        filter_slots = slots[1:] if kind.startswith("relate") else slots
        attrs = [ATTRIBUTE_OF[self.t.params[p]] for p in filter_slots]
        if kind.startswith("relate"):
            return self._relate_options(s.outputs[source], kind, attrs)
        options = self._filter_options(s.outputs[source], attrs)
        if kind == "filter_unique":
            return [(k, v) for k, v in options.items() if len(v) == 1]
        if kind == "filter":
            options.pop((None,) * len(attrs), None)
        singletons = sum(1 for v in options.values() if len(v) == 1)
        domains = [self.data.types[self.t.params[p]] for p in filter_slots]
        _add_empty(options, domains, len(options) if kind == "filter_exist" else singletons, self.rng)
        return list(options.items())

    def _relate_options(self, obj: int, kind: str, attrs: list[str]) -> list[tuple[tuple, list]]:
        unique = kind == "relate_filter_unique"
        allow_zero = kind in ("relate_filter_count", "relate_filter_exist")
        everything = self._filter_options(list(range(len(self.objects))), attrs)
        rel = related(self.scene)
        plain, trivial = [], []
        for r in RELATIONS:
            near = set(rel[r][obj])
            for key, matched in everything.items():
                hit = [i for i in matched if i in near]
                if (unique and len(hit) != 1) or (not allow_zero and not hit):
                    continue
                (trivial if len(hit) == len(matched) else plain).append(((r,) + key, hit))
        keep = round(len(plain) * TRIVIAL_FRACTION / (1 - TRIVIAL_FRACTION))
        return plain + self.rng.sample(trivial, min(keep, len(trivial)))

    def _composite(self, s: _State, kind: str, source: int, slots: list[str], key: tuple) -> _State | None:
        values = dict(s.values)
        new: list[dict] = []
        last = source
        if kind.startswith("relate"):
            new.append({"type": "relate", "inputs": [last], "value_inputs": [key[0]]})
            values[slots[0]] = key[0]
            slots, key = slots[1:], key[1:]
            last = len(s.nodes)
        for name, value in zip(slots, key):
            values[name] = value
            if value is not None:
                attr = ATTRIBUTE_OF[self.t.params[name]]
                new.append({"type": f"filter_{attr}", "inputs": [last], "value_inputs": [value]})
                last = len(s.nodes) + len(new) - 1
        for suffix in ("unique", "count", "exist"):
            if kind.endswith(suffix):
                new.append({"type": suffix, "inputs": [last], "value_inputs": []})
        if not new:  # a filter on nothing: the template node is its input
            where = dict(s.where)
            where[s.next] = source
            return _State(s.nodes, s.outputs, values, where, s.next + 1)
        return self._child(s, new, values)


def _words(template: Template, values: dict[str, Any], data: ClevrData, rng: random.Random,
           program: list[dict]) -> str:
    text = rng.choice(template.text)
    for name, kind in template.params.items():
        value = values.get(name)
        if value is None:
            value = "thing" if kind == "Shape" else ""
        if value in data.synonyms:
            value = rng.choice(data.synonyms[value])
        text = text.replace(name, value)
    text = _OPTIONAL.sub(lambda m: m.group(1) if rng.random() < 0.5 else "", text)
    text = " ".join(text.split())
    text = _other(text, values)
    chosen = [n["value_inputs"][0] for n in program if n["type"] == "choose"]
    if chosen:
        text = re.sub(r"\bX\b", chosen[0], text)
    text = _A_VOWEL.sub(r"\1n ", text).replace(" ;", ";").replace(" ?", "?")
    return text[:1].upper() + text[1:]


def _other(text: str, values: dict[str, Any]) -> str:
    """Drop "other" when the two objects compared are described differently (CLEVR's heuristic)."""
    if " other " not in text and " another " not in text:
        return text
    pairs = [(f"<{k}>", f"<{k}2>") for k in "ZCMS"]
    if any(a not in values or b not in values for a, b in pairs):
        return text
    if any(values[a] is not None and values[b] is not None and values[a] != values[b] for a, b in pairs):
        text = text.replace(" other ", " ").replace(" another ", " a ")
    return text


def instantiate(template: Template, scene: dict, data: ClevrData, rng: random.Random,
                yes: bool | None = None, candidates: int = CANDIDATES, budget: int = BUDGET) -> Question | None:
    """A question from ``template`` about ``scene``, or None if the search finds none in budget.

    A yes/no template answers ``yes`` (True or False) or gives None; other templates (and yes/no
    ones when ``yes`` is None) pick an answer uniformly among those of the first ``candidates``
    instantiations found.
    """
    target = yes if yes is not None and template.nodes[-1]["type"] in BOOLEAN else None
    found = _Search(template, scene, data, rng).run(candidates, budget, target)
    if target is not None:
        found = [s for s in found if s.outputs[-1] == target]
    if not found:
        return None
    answers = sorted({repr(s.outputs[-1]) for s in found})
    pick = rng.choice(answers)
    state = rng.choice([s for s in found if repr(s.outputs[-1]) == pick])
    text = _words(template, state.values, data, rng, state.nodes)
    return Question(text, state.nodes, state.outputs, template, dict(state.values))


def generate(family: str, scene: dict, data: ClevrData, rng: random.Random,
             yes: bool | None = None) -> Question | None:
    """A question of ``family`` about ``scene`` (templates tried in a random order until one fits);
    ``yes`` fixes the answer of yes/no templates, so a caller can balance them exactly."""
    templates = list(data.templates[family])
    rng.shuffle(templates)
    for template in templates:
        q = instantiate(template, scene, data, rng, yes)
        if q is not None:
            return q
    return None
