"""`maze`: where does a walk through a maze end? MVoT's MAZE task.

A perfect maze (exactly one path between any two cells) on an n x n grid, carved by a seeded
depth-first search; a start cell (red); a walk along the maze's passages, given as unit moves
("Go down. Go left." as in MVoT's data); four candidate cells lettered A-D in the image. The
question asks which letter the walk ends on. `MazeEnv` is the Gym-style environment underneath
(``reset``/``step``; a move into a wall leaves the agent in place) and makes the label.

The walk is the maze's unique path from the start to an end cell drawn uniformly among those
1..max_actions moves away; the distractors are cells the walk passes (up to two) and other cells,
never the start; the true cell's letter is uniform over A-D. Trace: ``maze`` (an ASCII drawing,
``+-+`` walls and ``|`` walls around each cell, readable by `parse_maze`), ``start``, ``actions``
(move words), ``states`` (the agent's [row, col] before the first move and after each move: the
ground truth of every visual thought, drawn by `render_maze`) and ``candidates`` (A-D in order).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from PIL import Image

from vrm import VrmError
from vrm.tasks.base import Explanation, Sample
from vrm.tasks.spatial.choices import (LETTERS, MOVE_DEFINITION, MOVES, STYLES, action_list, answer_sentence,
                                       check_min_actions, choice_letter, moved, mvot_question, parse_sizes, where)
from vrm.tasks.spatial.render import blank, cell_box, draw_letter, fill_cell, inset, layout

MAZE_TRIES = 200  # mazes drawn before giving up on a walk of min_actions..max_actions moves
FLOOR = (250, 250, 250)
VISITED = (254, 202, 202)  # pale red: cells the walk has passed
AGENT = (220, 38, 38)  # red
WALL = (0, 0, 0)
LETTER = (29, 78, 216)  # blue; white on the agent's cell
Cell = tuple[int, int]


def carve(n: int, rng: random.Random) -> set[frozenset]:
    """A perfect maze: the set of open passages (pairs of adjacent cells), by randomised DFS."""
    start = (rng.randrange(n), rng.randrange(n))
    seen, stack, passages = {start}, [start], set()
    while stack:
        cell = stack[-1]
        fresh = [nb for nb in (moved(cell, m) for m in MOVES) if 0 <= nb[0] < n and 0 <= nb[1] < n and nb not in seen]
        if not fresh:
            stack.pop()
            continue
        nb = rng.choice(fresh)
        passages.add(frozenset((cell, nb)))
        seen.add(nb)
        stack.append(nb)
    return passages


def maze_text(n: int, passages: set[frozenset]) -> list[str]:
    """The maze as ASCII rows: ``+`` corners, ``-`` and ``|`` walls, spaces for passages.

    >>> maze_text(2, {frozenset({(0, 0), (0, 1)}), frozenset({(0, 1), (1, 1)})})
    ['+-+-+', '|   |', '+-+ +', '| | |', '+-+-+']
    """
    rows = ["+" + "-+" * n]
    for r in range(n):
        line, below = "|", "+"
        for c in range(n):
            line += " " + (" " if frozenset({(r, c), (r, c + 1)}) in passages else "|")
            below += (" " if frozenset({(r, c), (r + 1, c)}) in passages else "-") + "+"
        rows += [line, below]
    return rows


def parse_maze(rows: list[str]) -> tuple[int, set[frozenset]]:
    """The size and open passages of an ASCII maze (the inverse of `maze_text`)."""
    n = (len(rows) - 1) // 2
    passages = set()
    for r in range(n):
        for c in range(n):
            if c + 1 < n and rows[2 * r + 1][2 * c + 2] == " ":
                passages.add(frozenset({(r, c), (r, c + 1)}))
            if r + 1 < n and rows[2 * r + 2][2 * c + 1] == " ":
                passages.add(frozenset({(r, c), (r + 1, c)}))
    return n, passages


class MazeEnv:
    """A Gym-style maze: observation = the agent's cell index ``row * n + col``; actions are
    gymnasium FrozenLake's codes (0 left, 1 down, 2 right, 3 up); a move into a wall stays put.
    Episodes never end by themselves (reward 0, not terminated): the walk is the question's.
    """

    def __init__(self, rows: list[str], start: Cell):
        self.n, self.passages = parse_maze(rows)
        self.start = tuple(start)
        self.cell = self.start

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        self.cell = tuple((options or {}).get("start", self.start))
        return self._obs(), {"cell": list(self.cell)}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        target = moved(self.cell, MOVES[action])
        blocked = frozenset((self.cell, target)) not in self.passages
        if not blocked:
            self.cell = target
        return self._obs(), 0.0, False, False, {"cell": list(self.cell), "blocked": blocked}

    def _obs(self) -> int:
        return self.cell[0] * self.n + self.cell[1]


def walk(rows: list[str], start: Cell, actions: list[str]) -> tuple[list[list[int]], int]:
    """Play move words in `MazeEnv`: the cells before and after each move, and how many moves hit a wall."""
    env = MazeEnv(rows, start)
    _, info = env.reset()
    states, bumps = [info["cell"]], 0
    for word in actions:
        _, _, _, _, info = env.step(MOVES.index(word))
        states.append(info["cell"])
        bumps += info["blocked"]
    return states, bumps


def render_maze(rows: list[str], path, candidates, canvas: int = 64) -> Image.Image:
    """The maze with the cells the walk has passed (pale red), the start (a red dot), the agent
    at the end of ``path`` (a red cell) and the candidate letters."""
    n, passages = parse_maze(rows)
    cell, _ = layout(n, canvas)
    image, draw = blank(canvas)
    path = [tuple(p) for p in path]
    for r in range(n):
        for c in range(n):
            colour = AGENT if (r, c) == path[-1] else VISITED if (r, c) in path else FLOOR
            fill_cell(draw, cell_box(n, canvas, r, c), colour, outline=None)
    if path[0] != path[-1]:
        draw.rectangle(inset(cell_box(n, canvas, *path[0]), max(2, cell // 3)), fill=AGENT)
    for letter, cand in zip(LETTERS, candidates):
        draw_letter(draw, cell_box(n, canvas, *cand), letter, (255, 255, 255) if tuple(cand) == path[-1] else LETTER)
    width = max(1, cell // 8)
    for r in range(n):
        for c in range(n):
            x0, y0, x1, y1 = cell_box(n, canvas, r, c)
            if c + 1 == n or frozenset({(r, c), (r, c + 1)}) not in passages:
                draw.rectangle((x1 - width + 1, y0, x1, y1), fill=WALL)
            if r + 1 == n or frozenset({(r, c), (r + 1, c)}) not in passages:
                draw.rectangle((x0, y1 - width + 1, x1, y1), fill=WALL)
            if c == 0:
                draw.rectangle((x0, y0, x0 + width - 1, y1), fill=WALL)
            if r == 0:
                draw.rectangle((x0, y0, x1, y0 + width - 1), fill=WALL)
    return image


def _tree_paths(n: int, passages: set[frozenset], start: Cell) -> dict[Cell, list[Cell]]:
    """The unique path from ``start`` to every cell."""
    paths, queue = {start: [start]}, deque([start])
    while queue:
        cell = queue.popleft()
        for nb in (moved(cell, m) for m in MOVES):
            if nb not in paths and frozenset((cell, nb)) in passages:
                paths[nb] = paths[cell] + [nb]
                queue.append(nb)
    return paths


def question(actions: list[str], style: str = "mvot", start: str = "red cell") -> str:
    if style in ("short", "steps"):
        listed = action_list(actions, numbered=style == "steps")
        return f"Actions: {listed}. Where does the walk from the {start} end: A, B, C or D?"
    instruction = (f"Determine the final destination (A, B, C or D) from the starting point ({start}) "
                   "following the action sequence.")
    return mvot_question("Maze Navigation Simulation", instruction, [MOVE_DEFINITION],
                         [f"Go {w}." for w in actions], LETTERS, list_options=False)


def options(candidates) -> list[str]:
    """The candidates in words (A first), so an answer naming the cell is understood too."""
    return [where(c) for c in candidates]


@dataclass
class MazeTask:
    """Walks through perfect mazes: which lettered cell does the walk end on?

    Args:
        sizes: maze sizes (n x n) to draw from; any n >= 3. A string "3,4" or an int works too.
        max_actions: longest walk (default 2n + 1 for an n x n maze).
        min_actions: shortest walk (default 1); e.g. 8 with ``max_actions=13`` gives long walks in
            small mazes, as a larger maze's walks are.
        canvas: image side in pixels.
        style: "mvot" (MVoT's question text), "short" (one line) or "steps" (one line, the actions
            numbered as the visual format's step lines).
    """

    sizes: tuple[int, ...] = (3, 4, 5, 6)
    max_actions: int | None = None
    min_actions: int = 1
    canvas: int = 64
    style: str = "mvot"
    name: str = "maze"
    families: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = parse_sizes(self.sizes, minimum=3)
        self.families = tuple(f"{n}x{n}" for n in self.sizes)
        if self.max_actions is not None and self.max_actions < 1:
            raise ValueError("max_actions must be at least 1")
        check_min_actions(self.min_actions, self.max_actions, self.sizes)
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; known: {list(STYLES)}")
        for n in self.sizes:
            cell_box(n, self.canvas, 0, 0)

    def sample(self, seed: int) -> Sample:
        rng = random.Random(f"{self.name}-{seed}")
        n = rng.choice(self.sizes)
        limit = self.max_actions or 2 * n + 1
        for _ in range(MAZE_TRIES):
            passages = carve(n, rng)
            rows = maze_text(n, passages)
            start = (rng.randrange(n), rng.randrange(n))
            paths = _tree_paths(n, passages, start)
            ends = sorted(c for c, p in paths.items() if self.min_actions <= len(p) - 1 <= limit)
            if ends:
                break
        else:
            raise VrmError(f"maze: no {n}x{n} maze in {MAZE_TRIES} had a walk of {self.min_actions}..{limit} "
                           "moves; lower min_actions")
        end = rng.choice(ends)
        path = paths[end]
        actions = [next(m for m in MOVES if moved(a, m) == b) for a, b in zip(path, path[1:])]
        states, _ = walk(rows, start, actions)
        final = tuple(states[-1])
        passed = path[1:-1]
        k = min(len(passed), rng.randint(0, 2))
        distractors = rng.sample(passed, k)
        others = sorted({(r, c) for r in range(n) for c in range(n)} - {start, final, *distractors})
        distractors += rng.sample(others, 3 - k)
        rng.shuffle(distractors)
        candidates = [list(c) for c in distractors]
        index = rng.randrange(4)
        candidates.insert(index, list(final))
        trace = {"size": n, "canvas": self.canvas, "maze": rows, "start": list(start), "actions": actions,
                 "states": states, "candidates": candidates}
        return Sample(f"{self.name}-{seed}", self.render(trace, 0), question(actions, self.style), LETTERS[index],
                      self.name, f"{n}x{n}", list(LETTERS), trace)

    def render(self, trace: dict, step: int = -1) -> Image.Image:
        """The maze after ``step`` moves (0: the start; -1: the end), the walk so far drawn."""
        states = trace["states"]
        upto = len(states) + step if step < 0 else step
        return render_maze(trace["maze"], states[: upto + 1], trace["candidates"], trace.get("canvas", self.canvas))

    def score(self, sample: Sample, answer: str) -> float:
        return float(choice_letter(answer, options(sample.trace["candidates"])) == sample.answer)

    def caption(self, sample: Sample) -> str:
        """The size, the start and where each letter is."""
        t = sample.trace
        letters = "; ".join(f"{letter} at {where(c)}" for letter, c in zip(LETTERS, t["candidates"]))
        return f"A {t['size']}x{t['size']} maze. The start is at {where(t['start'])}. {letters}."

    def explain(self, sample: Sample) -> Explanation:
        """The plan, the maze, one sentence per move, the letter of the final cell.

        >>> t = MazeTask(); s = t.sample(0); e = t.explain(s)
        >>> e.steps[-1].endswith(f"The answer is {s.answer}.")
        True
        """
        t = sample.trace
        steps = [f"{word}: agent at {where(cell)}." for word, cell in zip(t["actions"], t["states"][1:])]
        end = t["states"][-1]
        letter = next((L for L, c in zip(LETTERS, t["candidates"]) if list(c) == list(end)), None)
        label = f"which is {letter}" if letter else "which is none of the letters"
        steps.append(f"The walk ends at {where(end)}, {label}. {answer_sentence(sample.answer)}")
        n = len(t["actions"])
        summary = (f"I will follow the {n} move{'s' if n != 1 else ''} from the start through the maze "
                   "and see which lettered cell the walk ends on.")
        return Explanation(summary, self.caption(sample), steps)
