"""Spatial tasks after MVoT (Multimodal Visualization-of-Thought): Gym-style environments underneath,
MVoT's multiple-choice questions on top, and every intermediate state in the trace.

Modules: `frozenlake` (gymnasium's FrozenLake-v1: goal, hole or neither), `maze` (a perfect maze:
which lettered cell does a walk end on), `minibehavior` (MiniBehavior's InstallingAPrinter on
minigrid, environment in `printer_env`: where is the printer and is it on), `mvot` (MVoT's public
samples as vrm samples), `choices` (question layout, reading an answer's letter), `render` (cell
geometry and drawing). Each task's ``render(trace, step)`` draws the state after ``step`` actions:
the ground truth of every visual thought.
"""

from vrm.tasks.spatial.frozenlake import FrozenLakeTask
from vrm.tasks.spatial.maze import MazeTask
from vrm.tasks.spatial.minibehavior import MiniBehaviorTask
from vrm.tasks.spatial.mvot import MvotTask

__all__ = ["FrozenLakeTask", "MazeTask", "MiniBehaviorTask", "MvotTask"]
