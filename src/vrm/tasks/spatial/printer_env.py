"""`PrinterRoomEnv`: MiniBehavior's InstallingAPrinter as a minigrid environment.

A walled n x n room with the agent, a printer on the floor and a two-cell table. The goal (as in
MiniBehavior) is the printer on the table and switched on. Actions are absolute, as in MVoT's
tasks: 0 left, 1 down, 2 right, 3 up (face that way, then minigrid's ``forward``: blocked by the
table, the printer and the walls), 4 pickup, 5 drop, 6 toggle (all three act on the cell the agent
faces). minigrid has no table: a `Table` is a box that cannot be picked up and can hold the
printer, so ``pickup`` and ``drop`` facing the table are handled here; the rest is minigrid's own
``step``. The episode does not end when the printer is installed (the reward is 1 from then on):
the task asks about the state after a whole action sequence.

Room cells are (row, col), 0-indexed; minigrid's (x, y) = (col + 1, row + 1) inside the walls.
Imported on first use (minigrid pulls in pygame).
"""

from __future__ import annotations

from minigrid.core.constants import COLORS
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import WorldObj
from minigrid.minigrid_env import MiniGridEnv
from minigrid.utils.rendering import fill_coords, point_in_rect

ACTIONS = ("left", "down", "right", "up", "pickup", "drop", "toggle")
HEADINGS = ("right", "down", "left", "up")  # minigrid's agent_dir 0..3
MISSION = "install the printer: put it on the table and switch it on"


class Printer(WorldObj):
    """The printer: can be picked up; toggling switches it on and off."""

    def __init__(self, is_on: bool = False):
        super().__init__("ball", "purple")  # minigrid knows no printer type; the encoding is a ball's
        self.is_on = is_on

    def can_pickup(self) -> bool:
        return True

    def toggle(self, env, pos) -> bool:
        self.is_on = not self.is_on
        return True

    def render(self, img):
        fill_coords(img, point_in_rect(0.25, 0.75, 0.25, 0.75), COLORS["green" if self.is_on else "grey"])


class Table(WorldObj):
    """One cell of the table: blocks the agent, holds the printer (``contains``) put on it."""

    def __init__(self):
        super().__init__("box", "yellow")

    def toggle(self, env, pos) -> bool:
        return self.contains.toggle(env, pos) if self.contains is not None else False

    def render(self, img):
        fill_coords(img, point_in_rect(0.05, 0.95, 0.05, 0.95), (146, 94, 48))
        if self.contains is not None:
            self.contains.render(img)


class PrinterRoomEnv(MiniGridEnv):
    """The printer room; ``reset(options={"layout": ...})`` places everything, else the layout
    is drawn from the environment's seeded generator.

    A layout: ``{"agent": [r, c], "heading": "up", "printer": [r, c], "table": [[r, c], [r, c]]}``.
    """

    def __init__(self, size: int = 5, max_steps: int = 1000, **kwargs):
        self.size = size
        self.layout: dict | None = None
        super().__init__(mission_space=MissionSpace(mission_func=lambda: MISSION), grid_size=size + 2,
                         max_steps=max_steps, see_through_walls=True, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.layout = (options or {}).get("layout")
        return super().reset(seed=seed)

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        layout = self.layout or self._random_layout()
        for r, c in layout["table"]:
            self.grid.set(c + 1, r + 1, Table())
        r, c = layout["printer"]
        self.grid.set(c + 1, r + 1, Printer())
        self.agent_pos = (layout["agent"][1] + 1, layout["agent"][0] + 1)
        self.agent_dir = HEADINGS.index(layout["heading"])
        self.mission = MISSION

    def _random_layout(self) -> dict:
        n = self.size
        r, c = self._rand_int(0, n), self._rand_int(0, n - 1)
        table = [[r, c], [r, c + 1]] if self._rand_bool() else [[c, r], [c + 1, r]]
        free = [[i, j] for i in range(n) for j in range(n) if [i, j] not in table]
        printer, agent = [free[k] for k in self.np_random.choice(len(free), 2, replace=False)]
        return {"agent": agent, "heading": HEADINGS[self._rand_int(0, 4)], "printer": printer, "table": table}

    def step(self, action: int):
        word = ACTIONS[action]
        if word in HEADINGS:
            self.agent_dir = HEADINGS.index(word)  # absolute moves: face the direction, then go forward
            return self._finish(super().step(self.actions.forward))
        front = self.grid.get(*self.front_pos)
        if isinstance(front, Table) and word in ("pickup", "drop"):
            if word == "pickup" and self.carrying is None and front.contains is not None:
                self.carrying, front.contains = front.contains, None
            elif word == "drop" and self.carrying is not None and front.contains is None:
                front.contains, self.carrying = self.carrying, None
            return self._finish(super().step(self.actions.done))
        return self._finish(super().step(getattr(self.actions, word)))

    def _finish(self, result):
        obs, _, terminated, truncated, info = result
        state = self.state()
        installed = state["on_table"] and state["printer_on"]
        return obs, float(installed), terminated, truncated, {**info, "state": state}

    def state(self) -> dict:
        """The room in plain JSON: agent cell and heading, whether it carries the printer, the
        printer's cell (None while carried), whether it is on the table and switched on."""
        x, y = self.agent_pos
        printer, cell, on_table = self.carrying, None, False
        for j in range(1, self.size + 1):
            for i in range(1, self.size + 1):
                obj = self.grid.get(i, j)
                if isinstance(obj, Table) and obj.contains is not None:
                    printer, cell, on_table = obj.contains, [j - 1, i - 1], True
                elif isinstance(obj, Printer):
                    printer, cell = obj, [j - 1, i - 1]
        return {"agent": [int(y) - 1, int(x) - 1], "heading": HEADINGS[self.agent_dir],
                "carrying": self.carrying is not None, "printer": cell, "on_table": on_table,
                "printer_on": printer.is_on}
