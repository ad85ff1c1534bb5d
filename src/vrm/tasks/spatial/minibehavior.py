"""`minibehavior`: what state is the printer in after the agent's actions? MVoT's MINIBEHAVIOR task,
modelled on MiniBehavior's InstallingAPrinter and played on minigrid (`PrinterRoomEnv`).

A room with the agent (a red triangle pointing where it faces), a printer (grey, green when on) and
a two-cell table (brown); an action sequence of absolute moves, pick up, put down and toggle. The
question asks about the final state: A the printer is on the table and on (installed), B on the
table and off, C held by the agent, D on the floor. The answer is what minigrid does.

The outcome is drawn first (uniform over A-D) and a sequence built for it on a live environment:
walk to the printer (breadth-first over free cells), face it, pick it up, walk to the table, put it
down, toggle, with random detours and extra toggles; every outcome's sequences also hold actions
done facing a wall, which do nothing, so the words alone do not tell the outcome (see `plan`). A
sequence that ends elsewhere than planned is drawn again. Trace: ``room`` (size), ``table``
(cells), ``actions`` (words), ``states`` (the room before the first action and after each, as
`PrinterRoomEnv.state` gives it: the ground truth of every visual thought, drawn by `render_room`).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from PIL import Image

from vrm import VrmError
from vrm.tasks.base import Explanation, Sample
from vrm.tasks.spatial.choices import (LETTERS, MOVES, STYLES, action_phrase, answer_sentence, choice_letter, moved,
                                       mvot_question, parse_sizes, short_question, where)
from vrm.tasks.spatial.render import blank, cell_box, draw_arrow, fill_cell, inset

ACTIONS = ("left", "down", "right", "up", "pickup", "drop", "toggle")  # PrinterRoomEnv's codes
SAY = {"pickup": "pick up", "drop": "put down", "toggle": "toggle"}
OPTIONS = ("The printer is on the table and switched on.", "The printer is on the table and switched off.",
           "The agent is holding the printer.", "The printer is on the floor.")
SHORT_OPTIONS = ("on the table, on", "on the table, off", "held by the agent", "on the floor")
DEFINITIONS = (
    "Go up/left/down/right: face the absolute up/left/down/right direction and move one grid space, "
    "unless a wall, the table or the printer is in the way.",
    "Pick up: pick up the printer the agent faces.",
    "Put down: put the carried printer on the floor or the table cell the agent faces.",
    "Toggle: switch the printer the agent faces on or off.",
)
FLOOR = (235, 235, 228)
TABLE = (146, 94, 48)  # brown
PRINTER = {False: (100, 116, 139), True: (34, 197, 94)}  # grey off, green on
AGENT = (220, 38, 38)  # red
PLAN_TRIES = 50


def outcome(state: dict) -> str:
    """The option letter a room state answers."""
    if state["on_table"]:
        return "A" if state["printer_on"] else "B"
    return "C" if state["carrying"] else "D"


def render_room(n: int, table, state: dict, canvas: int = 64) -> Image.Image:
    """The room in ``state``: table cells, the printer (on the floor, on the table, or filling the
    agent's cell while carried) and the agent as a triangle pointing where it faces."""
    image, draw = blank(canvas)
    table = [tuple(t) for t in table]
    for r in range(n):
        for c in range(n):
            fill_cell(draw, cell_box(n, canvas, r, c), TABLE if (r, c) in table else FLOOR)
    printer = PRINTER[state["printer_on"]]
    if state["printer"] is not None:
        box = cell_box(n, canvas, *state["printer"])
        draw.rectangle(inset(box, max(2, (box[2] - box[0] + 1) // 4)), fill=printer)
    box = cell_box(n, canvas, *state["agent"])
    if state["carrying"]:
        fill_cell(draw, box, printer)
    draw_arrow(draw, box, state["heading"], AGENT)
    return image


class _Episode:
    """A live `PrinterRoomEnv` that records every action and state, with planning helpers."""

    def __init__(self, n: int, layout: dict, rng: random.Random):
        from vrm.tasks.spatial.printer_env import PrinterRoomEnv  # minigrid + pygame: imported on use

        self.n, self.rng, self.table = n, rng, [tuple(t) for t in layout["table"]]
        self.env = PrinterRoomEnv(size=n)
        self.env.reset(seed=0, options={"layout": layout})
        self.actions: list[str] = []
        self.states = [self.env.state()]

    @property
    def state(self) -> dict:
        return self.states[-1]

    def do(self, word: str) -> None:
        _, _, _, _, info = self.env.step(ACTIONS.index(word))
        self.actions.append(word)
        self.states.append(info["state"])

    def free(self, cell) -> bool:
        r, c = cell
        if not (0 <= r < self.n and 0 <= c < self.n) or tuple(cell) in self.table:
            return False
        return self.state["printer"] is None or tuple(self.state["printer"]) != tuple(cell)

    def face(self, targets) -> bool:
        """Walk (shortest path, random ties) next to one of ``targets`` and face it; False if none is reachable."""
        targets = {tuple(t) for t in targets if t is not None}  # a carried printer has no cell
        start = tuple(self.state["agent"])
        paths, queue = {start: []}, deque([start])
        ends = []
        while queue:
            cell = queue.popleft()
            ends += [(cell, m) for m in MOVES if moved(cell, m) in targets]
            moves = list(MOVES)
            self.rng.shuffle(moves)
            for m in moves:
                nb = moved(cell, m)
                if nb not in paths and self.free(nb):
                    paths[nb] = paths[cell] + [m]
                    queue.append(nb)
        if not ends:
            return False
        best = min(len(paths[c]) for c, _ in ends)
        cell, last = self.rng.choice([(c, m) for c, m in ends if len(paths[c]) == best])
        for m in paths[cell] + [last]:
            self.do(m)
        return True

    @property
    def walls(self) -> list[tuple[int, int]]:
        """The cells just outside the room: facing one is facing a wall."""
        n = self.n
        return [(i, j) for k in range(n) for i, j in ((-1, k), (n, k), (k, -1), (k, n))]

    def wander(self, k: int) -> None:
        """k random moves (a blocked one only turns the agent)."""
        for _ in range(k):
            self.do(self.rng.choice(MOVES))


def plan(ep: _Episode, target: str) -> None:
    """Act on ``ep`` towards the outcome ``target`` (A-D); the caller checks where it ended.

    Every outcome's sequences mix pick up, put down and toggle, some of them done facing a wall
    (so they do nothing): which actions take effect shows only in the room, not in the words.
    """
    rng = ep.rng
    ep.wander(rng.randint(0, 2))
    if rng.random() < 0.3 and ep.face([ep.state["printer"]]):
        ep.do("toggle")  # switched on on the floor first
    if target == "D" and rng.random() < 0.5:  # the pick up misses: the agent faces a wall
        ep.face(ep.walls)
        ep.do("pickup")
        ep.wander(rng.randint(0, 2))
        for word in ("drop", "toggle"):
            if rng.random() < 0.5:
                ep.do(word)
        return
    if not ep.face([ep.state["printer"]]):
        return
    ep.do("pickup")
    ep.wander(rng.randint(0, 2))
    if target == "C":  # put down against a wall, toggle with nothing to toggle: the printer stays held
        if rng.random() < 0.6:
            ep.face(ep.walls)
            ep.do("drop")
        if rng.random() < 0.5:
            ep.do("toggle")
        return
    if target == "D":  # put down on the floor: move until a free cell is ahead
        for _ in range(8):
            if ep.free(moved(ep.state["agent"], ep.state["heading"])):
                ep.do("drop")
                if rng.random() < 0.4:
                    ep.do("toggle")
                return
            ep.do(rng.choice(MOVES))
        return
    if not ep.face(ep.table):
        return
    ep.do("drop")
    if ep.state["printer_on"] != (target == "A"):
        ep.do("toggle")
    elif rng.random() < 0.3:
        ep.do("toggle")
        ep.do("toggle")
    if rng.random() < 0.5:  # walk off and toggle facing a wall: nothing happens
        ep.face(ep.walls)
        ep.do("toggle")


def question(actions: list[str], style: str = "mvot") -> str:
    words = [SAY.get(a, a) for a in actions]
    if style in ("short", "steps"):
        return short_question("Where is the printer?", words, SHORT_OPTIONS, numbered=style == "steps")
    instruction = ("Determine the state of the printer after the agent (red triangle, pointing where it faces) "
                   "follows the action sequence. The printer is grey when off and green when on; the table is brown.")
    sequence = [f"{action_phrase(w)}." for w in words]
    return mvot_question("Installing a Printer", instruction, DEFINITIONS, sequence, OPTIONS)


@dataclass
class MiniBehaviorTask:
    """Installing a printer in a grid room: where is the printer, and is it on, after the actions?

    Args:
        sizes: room sizes (n x n) to draw from; any n >= 3. A string "4,5" or an int works too.
        canvas: image side in pixels.
        style: "mvot" (MVoT-style question text), "short" (one line) or "steps" (one line, the
            actions numbered as the visual format's step lines).
    """

    sizes: tuple[int, ...] = (4, 5, 6)
    canvas: int = 64
    style: str = "mvot"
    name: str = "minibehavior"
    families: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = parse_sizes(self.sizes, minimum=3)
        self.families = tuple(f"{n}x{n}" for n in self.sizes)
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; known: {list(STYLES)}")
        for n in self.sizes:
            cell_box(n, self.canvas, 0, 0)

    def layout(self, n: int, rng: random.Random) -> dict:
        """Agent, printer and a two-cell table on distinct cells, every free cell connected."""
        while True:
            r, c = rng.randrange(n), rng.randrange(n - 1)
            table = [[r, c], [r, c + 1]] if rng.random() < 0.5 else [[c, r], [c + 1, r]]
            free = [[i, j] for i in range(n) for j in range(n) if [i, j] not in table]
            printer, agent = rng.sample(free, 2)
            blocked = {tuple(t) for t in table} | {tuple(printer)}
            open_cells = {(i, j) for i in range(n) for j in range(n)} - blocked
            seen, queue = {tuple(agent)}, deque([tuple(agent)])
            while queue:
                cell = queue.popleft()
                for nb in (moved(cell, m) for m in MOVES):
                    if nb in open_cells and nb not in seen:
                        seen.add(nb)
                        queue.append(nb)
            if seen == open_cells:
                return {"agent": agent, "heading": rng.choice(MOVES), "printer": printer, "table": table}

    def sample(self, seed: int) -> Sample:
        rng = random.Random(f"{self.name}-{seed}")
        n = rng.choice(self.sizes)
        target = rng.choice(LETTERS)
        for _ in range(PLAN_TRIES):
            layout = self.layout(n, rng)
            ep = _Episode(n, layout, rng)
            plan(ep, target)
            if ep.actions and outcome(ep.state) == target:
                break
        else:
            raise VrmError(f"minibehavior: no plan in {PLAN_TRIES} tries ended in {target}")
        trace = {"room": n, "canvas": self.canvas, "table": layout["table"], "actions": ep.actions,
                 "states": ep.states}
        return Sample(f"{self.name}-{seed}", self.render(trace, 0), question(ep.actions, self.style), target,
                      self.name, f"{n}x{n}", list(LETTERS), trace)

    def render(self, trace: dict, step: int = -1) -> Image.Image:
        """The room after ``step`` actions (0: the start; -1: the end)."""
        return render_room(trace["room"], trace["table"], trace["states"][step], trace.get("canvas", self.canvas))

    def score(self, sample: Sample, answer: str) -> float:
        return float(choice_letter(answer, OPTIONS) == sample.answer)

    def caption(self, sample: Sample) -> str:
        """The room, the agent (cell and heading), the printer and the table."""
        t = sample.trace
        s = t["states"][0]
        table = " and ".join(where(c) for c in t["table"])
        return (f"A {t['room']}x{t['room']} room. The agent is at {where(s['agent'])}, facing {s['heading']}. "
                f"The printer ({'on' if s['printer_on'] else 'off'}) is on the floor at {where(s['printer'])}. "
                f"The table covers {table}.")

    def explain(self, sample: Sample) -> Explanation:
        """The plan, the room, one sentence per action, the final state and its letter.

        >>> t = MiniBehaviorTask(); s = t.sample(0); e = t.explain(s)
        >>> len(e.steps) == len(s.trace["actions"]) + 1 and e.steps[-1].endswith(f"The answer is {s.answer}.")
        True
        """
        t = sample.trace
        steps = [describe(a, before, after) for a, before, after in zip(t["actions"], t["states"], t["states"][1:])]
        final = OPTIONS[LETTERS.index(outcome(t["states"][-1]))]
        steps.append(f"{final} {answer_sentence(sample.answer)}")
        n = len(t["actions"])
        summary = (f"I will follow the {n} action{'s' if n != 1 else ''} in the room and track the agent and "
                   "the printer to see where the printer ends and whether it is on.")
        return Explanation(summary, self.caption(sample), steps)


def describe(action: str, before: dict, after: dict) -> str:
    """One action's effect in words."""
    if action in MOVES:
        if after["agent"] == before["agent"]:
            return f"{action}: blocked; agent at {where(after['agent'])}, facing {action}."
        return f"{action}: agent at {where(after['agent'])}."
    say = SAY[action]
    if action == "pickup":
        return f"{say}: the agent holds the printer." if after["carrying"] != before["carrying"] else f"{say}: nothing happens."
    if action == "drop":
        if after["carrying"] == before["carrying"]:
            return f"{say}: nothing happens."
        place = "the table" if after["on_table"] else "the floor"
        return f"{say}: the printer is on {place} at {where(after['printer'])}."
    if after["printer_on"] != before["printer_on"]:
        return f"{say}: the printer is {'on' if after['printer_on'] else 'off'}."
    return f"{say}: nothing happens."
