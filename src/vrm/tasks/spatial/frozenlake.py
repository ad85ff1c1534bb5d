"""`frozenlake`: does a sequence of moves on a frozen lake reach the goal? MVoT's FROZENLAKE task.

Maps come from gymnasium's `generate_random_map`, with the start and the goal then moved to random
frozen tiles (the goal reachable from the start), as in MVoT's maps: with gymnasium's fixed corners a
success would always move the agent by (n-1, n-1), which the words alone would give away. The
episode is played by gymnasium's own ``FrozenLake-v1`` dynamics (`FrozenLakeEnv`,
``is_slippery=False``): the label is what the real environment does, not what the generator
planned. The options are MVoT's: A the agent reaches the goal, B it falls into a hole, C it stays
safe but not at the goal. As in MVoT's data, moves after a fall are still listed in the question
(and in ``actions``) but never taken.

The outcome is drawn first (uniformly, so A, B and C are equally likely) and a random walk is
built to reach it; walks never step off the lake. Trace: ``map`` (gymnasium's ``desc`` rows, e.g.
``["SFF", "FHF", "FFG"]``), ``actions`` (gymnasium's codes: 0 left, 1 down, 2 right, 3 up),
``states`` (the agent's [row, col] before the first action and after each action taken: the
ground truth of every visual thought, drawn by `render_lake`) and ``outcome``.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from PIL import Image

from vrm import VrmError
from vrm.tasks.base import Explanation, Sample
from vrm.tasks.spatial.choices import (MOVE_DEFINITION, MOVES, STYLES, answer_sentence, check_min_actions,
                                       choice_letter, moved, mvot_question, parse_sizes, short_question, where)
from vrm.tasks.spatial.render import blank, cell_box, fill_cell, inset

OPTIONS = ("Action Success.", "Action Failed: Fall into the Hole.",
           "Action Failed: Agent Safe but Fail to Reach Destination.")
OUTCOMES = ("success", "hole", "safe")  # in the order of OPTIONS: A, B, C
SHORT_OPTIONS = ("reaches the goal", "falls into a hole", "safe but not at the goal")
COLOURS = {
    "F": (200, 228, 250),  # frozen: pale ice blue
    "S": (253, 230, 138),  # start: pale yellow
    "H": (23, 37, 84),  # hole: dark navy
    "G": (22, 163, 74),  # goal: green
}
AGENT = (220, 38, 38)  # red
MAP_TRIES = 200
WALK_TRIES = 30


def random_map(n: int, frozen: float, rng: random.Random) -> list[str]:
    """A gymnasium random map (seeded from ``rng``) with the start and the goal moved to random
    frozen tiles, the goal reachable from the start (MVoT's maps put them anywhere too)."""
    from gymnasium.envs.toy_text.frozen_lake import generate_random_map  # gymnasium: ~0.4 s, imported on use

    tiles = [list(row.replace("S", "F").replace("G", "F")) for row in
             generate_random_map(size=n, p=frozen, seed=rng.randrange(2**31))]
    frozen_cells = [(r, c) for r in range(n) for c in range(n) if tiles[r][c] == "F"]
    while True:
        start = rng.choice(frozen_cells)
        reach = sorted(set(_distances(["".join(t) for t in tiles], start)) - {start})
        if reach:
            break
    goal = rng.choice(reach)
    tiles[start[0]][start[1]], tiles[goal[0]][goal[1]] = "S", "G"
    return ["".join(t) for t in tiles]


def run_episode(rows: list[str], actions: list[int]) -> tuple[list[list[int]], str]:
    """Play ``actions`` in gymnasium's FrozenLake-v1 (not slippery) on map ``rows``.

    Returns the agent's [row, col] before the first action and after each action taken, and the
    outcome: "success" (reached the goal), "hole" (fell in; later actions are not taken) or "safe".

    >>> run_episode(["SFH", "FFF", "HFG"], [2, 2, 1])
    ([[0, 0], [0, 1], [0, 2]], 'hole')
    """
    from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

    env = FrozenLakeEnv(desc=rows, is_slippery=False)
    s, _ = env.reset(seed=0)
    n = len(rows[0])
    states = [list(divmod(s, n))]
    for a in actions:
        s, reward, terminated, _, _ = env.step(int(a))
        states.append(list(divmod(s, n)))
        if terminated:
            return states, "success" if reward > 0 else "hole"
    return states, "safe"


def render_lake(rows: list[str], agent, canvas: int = 64) -> Image.Image:
    """The lake with the agent (a red square, the tile's colour around it) at cell ``agent``."""
    n = len(rows)
    image, draw = blank(canvas)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            fill_cell(draw, cell_box(n, canvas, r, c), COLOURS[tile])
    box = cell_box(n, canvas, *agent)
    draw.rectangle(inset(box, max(2, (box[2] - box[0] + 1) // 4)), fill=AGENT)
    return image


def _find(rows: list[str], tile: str) -> tuple[int, int]:
    return next((r, row.index(tile)) for r, row in enumerate(rows) if tile in row)


def _neighbours(rows: list[str], cell) -> list[tuple[int, tuple[int, int]]]:
    """(action code, cell) for every move that stays on the lake."""
    n = len(rows)
    out = []
    for code, move in enumerate(MOVES):
        r, c = moved(cell, move)
        if 0 <= r < n and 0 <= c < n:
            out.append((code, (r, c)))
    return out


def _walk(rows, cell, steps: int, rng: random.Random) -> tuple[list[int], tuple[int, int]] | None:
    """A random walk of ``steps`` moves over frozen tiles (never a hole, never the goal)."""
    actions = []
    for _ in range(steps):
        options = [(a, nb) for a, nb in _neighbours(rows, cell) if rows[nb[0]][nb[1]] in "FS"]
        if not options:
            return None
        a, cell = rng.choice(options)
        actions.append(a)
    return actions, cell


def _distances(rows: list[str], source) -> dict[tuple[int, int], int]:
    """Moves from ``source`` to every tile reachable without crossing a hole."""
    dist, queue = {tuple(source): 0}, deque([tuple(source)])
    while queue:
        cell = queue.popleft()
        for _, nb in _neighbours(rows, cell):
            if nb not in dist and rows[nb[0]][nb[1]] != "H":
                dist[nb] = dist[cell] + 1
                queue.append(nb)
    return dist


def plan(rows: list[str], outcome: str, max_actions: int, rng: random.Random,
         min_actions: int = 1) -> list[int] | None:
    """A random action sequence of ``min_actions`` to ``max_actions`` moves meant to end in
    ``outcome``, or None when this map cannot give one.

    success: a walk to the goal that heads for it 70% of the time (always when the budget is
    tight; never while going straight there would make it shorter than ``min_actions``, and it never
    steps on the goal before then). hole / safe: T moves, T the length of a success walk on the same
    map (so the length does not give the answer away; uniform in min..max_actions when the goal is
    out of reach); safe walks all T moves over frozen tiles; hole walks L-1 (L uniform in 1..T),
    steps into an adjacent hole, then lists T-L random moves that are never taken.
    """
    start = _find(rows, "S")
    if outcome == "success":
        goal = _find(rows, "G")
        dist = _distances(rows, goal)
        if dist.get(start, max_actions + 1) > max_actions:
            return None
        cell, actions = start, []
        while cell != goal:
            early = len(actions) + 1 < min_actions  # stepping on the goal now would end too soon
            options = [(a, nb) for a, nb in _neighbours(rows, cell) if nb in dist and not (early and nb == goal)]
            closer = [(a, nb) for a, nb in options if dist[nb] < dist[cell]]
            tight = len(actions) + dist[cell] + 2 > max_actions  # one more detour would not fit
            short = len(actions) + dist[cell] < min_actions  # going straight there would end too soon
            pool = closer if tight or (not short and rng.random() < 0.7) else options
            if not pool:  # the goal is the only way on, and too soon to step on it
                return None
            a, cell = rng.choice(pool)
            actions.append(a)
        return actions
    total = len(plan(rows, "success", max_actions, rng, min_actions) or []) or rng.randint(min_actions, max_actions)
    for _ in range(WALK_TRIES):
        if outcome == "safe":
            walk = _walk(rows, start, total, rng)
            if walk:
                return walk[0]
            continue
        fall = rng.randint(1, total)
        walk = _walk(rows, start, fall - 1, rng)
        if walk is None:
            continue
        holes = [a for a, nb in _neighbours(rows, walk[1]) if rows[nb[0]][nb[1]] == "H"]
        if holes:
            return walk[0] + [rng.choice(holes)] + [rng.randrange(4) for _ in range(total - fall)]
    return None


def question(actions: list[int], style: str = "mvot", agent: str = "agent (red square)",
             goal: str = "goal (green cell)", holes: str = "holes (dark blue cells)") -> str:
    """The question in MVoT's words (``agent``, ``goal`` and ``holes`` name what the image shows)."""
    words = [MOVES[a] for a in actions]
    if style in ("short", "steps"):
        return short_question("Does the agent reach the goal?", words, SHORT_OPTIONS, numbered=style == "steps")
    instruction = (f"Determine whether the {agent} can safely reach the {goal} following the action sequence "
                   f"without falling into the {holes}. If not, identify the failure reason.")
    return mvot_question("FrozenLake", instruction, [MOVE_DEFINITION], [f"Go {w}." for w in words], OPTIONS)


def _tiles(rows: list[str], tile: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(rows) for c, t in enumerate(row) if t == tile]


@dataclass
class FrozenLakeTask:
    """FrozenLake episodes: will the agent reach the goal, fall into a hole, or stop safely?

    Args:
        sizes: lake sizes (n x n) to draw from; any n >= 2. A string "3,4" or an int works too.
        frozen: probability that a tile is frozen (gymnasium's ``p``).
        max_actions: longest action sequence (default 2n + 1 for an n x n lake).
        min_actions: shortest action sequence (default 1); e.g. 8 with ``max_actions=13`` gives long
            walks on small lakes, as a larger lake's walks are.
        canvas: image side in pixels.
        style: "mvot" (MVoT's question text), "short" (one line) or "steps" (one line, the actions
            numbered as the visual format's step lines).
    """

    sizes: tuple[int, ...] = (3, 4, 5, 6)
    frozen: float = 0.8
    max_actions: int | None = None
    min_actions: int = 1
    canvas: int = 64
    style: str = "mvot"
    name: str = "frozenlake"
    families: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = parse_sizes(self.sizes, minimum=2)
        self.families = tuple(f"{n}x{n}" for n in self.sizes)
        if not 0.0 < self.frozen <= 1.0:
            raise ValueError("frozen must be in (0, 1]")
        if self.max_actions is not None and self.max_actions < 2 * max(self.sizes) - 2:
            raise ValueError(f"max_actions must be at least {2 * max(self.sizes) - 2} (corner to corner "
                             f"on a {max(self.sizes)}x{max(self.sizes)} lake)")
        check_min_actions(self.min_actions, self.max_actions, self.sizes)
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; known: {list(STYLES)}")
        for n in self.sizes:
            cell_box(n, self.canvas, 0, 0)  # raises for a canvas too small for n

    def sample(self, seed: int) -> Sample:
        rng = random.Random(f"{self.name}-{seed}")
        n = rng.choice(self.sizes)
        target = rng.choice(OUTCOMES)
        limit = self.max_actions or 2 * n + 1
        for _ in range(MAP_TRIES):
            rows = random_map(n, self.frozen, rng)
            actions = plan(rows, target, limit, rng, self.min_actions)
            if actions is not None:
                break
        else:
            raise VrmError(f"frozenlake: no {n}x{n} map in {MAP_TRIES} gave a {target!r} episode; "
                           "change frozen or max_actions")
        states, outcome = run_episode(rows, actions)
        if outcome != target:
            raise RuntimeError(f"frozenlake planner bug: planned {target}, gymnasium says {outcome} "
                               f"(map {rows}, actions {actions})")
        trace = {"size": n, "canvas": self.canvas, "map": rows, "actions": actions, "states": states,
                 "outcome": outcome}
        answer = "ABC"[OUTCOMES.index(outcome)]
        return Sample(f"{self.name}-{seed}", self.render(trace, 0), question(actions, self.style), answer,
                      self.name, f"{n}x{n}", list("ABC"), trace)

    def render(self, trace: dict, step: int = -1) -> Image.Image:
        """The lake with the agent where it is after ``step`` actions taken (0: the start; -1: the end)."""
        return render_lake(trace["map"], trace["states"][step], trace.get("canvas", self.canvas))

    def score(self, sample: Sample, answer: str) -> float:
        return float(choice_letter(answer, OPTIONS) == sample.answer)

    def caption(self, sample: Sample) -> str:
        """The size, then the start, the goal and every hole."""
        rows = sample.trace["map"]
        holes = _tiles(rows, "H")
        hole_text = "; ".join(where(h) for h in holes) if holes else "none"
        return (f"A {len(rows)}x{len(rows)} frozen lake. The agent starts at {where(_find(rows, 'S'))}. "
                f"The goal is at {where(_find(rows, 'G'))}. Holes: {hole_text}.")

    def explain(self, sample: Sample) -> Explanation:
        """The plan, the lake, one sentence per action taken, the outcome and its letter.

        >>> t = FrozenLakeTask(); s = t.sample(0); e = t.explain(s)
        >>> len(e.steps) == len(s.trace["states"]) and e.steps[-1].endswith(f"The answer is {s.answer}.")
        True
        """
        trace = sample.trace
        rows, actions, states = trace["map"], trace["actions"], trace["states"]
        steps = []
        for a, cell in zip(actions, states[1:]):
            tile = rows[cell[0]][cell[1]]
            note = {"H": ", a hole", "G": ", the goal"}.get(tile, "")
            steps.append(f"{MOVES[a]}: agent at {where(cell)}{note}.")
        end, outcome = states[-1], trace["outcome"]
        if outcome == "success":
            last = "The agent reached the goal."
        elif outcome == "hole":
            skipped = len(actions) - (len(states) - 1)
            rest = f"; the {skipped} remaining action{'s are' if skipped != 1 else ' is'} not taken" if skipped else ""
            last = f"The agent fell into the hole at {where(end)}{rest}."
        else:
            last = f"The agent is safe at {where(end)} but not at the goal."
        steps.append(f"{last} {answer_sentence(sample.answer)}")
        summary = (f"I will follow the {len(actions)} action{'s' if len(actions) != 1 else ''} from the start and "
                   "check whether the agent reaches the goal, falls into a hole or stops safely elsewhere.")
        return Explanation(summary, self.caption(sample), steps)

