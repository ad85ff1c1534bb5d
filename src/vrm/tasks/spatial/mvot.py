"""Reading MVoT's public samples (FrozenLake and Maze) into vrm samples, and `MvotTask`, the dataset
they form.

MVoT (Li et al., 2025; Apache-2.0, LICENSE beside the data) publishes toy samples in the layout its
data loaders read: ``frozenlake/level<n>/data.json`` (per environment: ``env_desc`` (the map, row
after row), per episode ``actions``, ``additional_actions`` (listed in the question after a fall,
never taken), ``states`` (cell indices, the start first), ``exec_states`` (success / terminated =
fell into a hole / truncated = safe elsewhere); images ``<data_id>/<step>.png``) and
``maze/grid<n>.json`` (per path: ``maze_info`` (per cell row by row, "T" when the passage down is
open, then the same for the passage right), ``path_locs`` ([row, col], the start first),
``action_list`` ("down-1"), ``candidate_locs`` (A-D); images ``<file_prefix>_<step>.jpg``, step 1
the start). Paths with equal ``path_locs`` are dropped, as MVoT's loader does.

The samples get vrm's trace layout (so `FrozenLakeTask` and `MazeTask` explain and render them) and
MVoT's own labels as answers; ``trace["mvot"]`` keeps MVoT's fields. vrm ships none of these
files: the folder is ``$VRM_MVOT_DATA``, else ``shared/data/mvot_samples`` beside the repository.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from vrm import VrmError
from vrm.tasks.shared_data import data_candidates
from vrm.images import load_image
from vrm.tasks.base import Explanation, Sample
from vrm.tasks.spatial import frozenlake, maze
from vrm.tasks.spatial.choices import LETTERS, MOVES

ENV_VAR = "VRM_MVOT_DATA"
EXEC_STATES = {"success": "success", "terminated": "hole", "truncated": "safe"}
IMAGES = ("mvot", "vrm")


def find_data_dir(data_dir: str | Path | None = None) -> Path:
    """The MVoT samples folder: ``data_dir``, else ``$VRM_MVOT_DATA``, else the first
    ``shared/data/mvot_samples`` found above this file or the working directory."""
    tried = data_candidates("mvot_samples", ENV_VAR, data_dir)
    for path in tried:
        if (path / "frozenlake").is_dir() and (path / "maze").is_dir():
            return path.resolve()
    raise VrmError(f"MVoT samples not found at {tried[0]}: set {ENV_VAR} to the folder holding "
                   "MVoT's frozenlake/ and maze/ sample folders")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise VrmError(f"{path}: cannot read MVoT samples ({e})") from None


def maze_rows(info: str, n: int) -> list[str]:
    """MVoT's ``maze_info`` as vrm's ASCII maze.

    >>> maze_rows("TFFF" + "FFTF", 2)
    ['+-+-+', '| | |', '+ +-+', '|   |', '+-+-+']
    """
    if len(info) != 2 * n * n or set(info) - {"T", "F"}:
        raise VrmError(f"MVoT maze_info {info!r} is not {2 * n * n} T/F flags")
    down, right = info[: n * n], info[n * n:]
    passages = set()
    for i in range(n * n):
        r, c = divmod(i, n)
        if down[i] == "T":
            passages.add(frozenset({(r, c), (r + 1, c)}))
        if right[i] == "T":
            passages.add(frozenset({(r, c), (r, c + 1)}))
    return maze.maze_text(n, passages)


def load_frozenlake(root: Path, images: str = "mvot", canvas: int = 64) -> list[Sample]:
    """Every FrozenLake episode, as `FrozenLakeTask` samples would hold it, with MVoT's label."""
    samples = []
    for data_file in sorted((root / "frozenlake").glob("level*/data.json"), key=lambda p: p.parent.name):
        level = data_file.parent
        for env_id, env in sorted(_read_json(data_file).items(), key=lambda kv: int(kv[0])):
            desc = env["env_desc"]
            n = int(round(len(desc) ** 0.5))
            rows = [desc[r * n:(r + 1) * n] for r in range(n)]
            for i, data_id in enumerate(env["data_id"]):
                actions = list(env["actions"][i]) + list(env["additional_actions"][i])
                if not env["actions"][i]:
                    continue  # MVoT's loader skips empty episodes too
                trace = {
                    "size": n, "canvas": canvas, "map": rows, "actions": actions,
                    "states": [list(divmod(s, n)) for s in env["states"][i]],
                    "outcome": EXEC_STATES[env["exec_states"][i]],
                    "mvot": {"env": env_id, "data_id": data_id, "exec_state": env["exec_states"][i],
                             "reward": env["rewards"][i], "images": f"frozenlake/{level.name}/{data_id}"},
                }
                answer = "ABC"[frozenlake.OUTCOMES.index(trace["outcome"])]
                if images == "mvot":
                    image = load_image(level / str(data_id) / "0.png")
                    text = frozenlake.question(actions, agent="agent (elf character)", goal="gift", holes="holes")
                else:
                    image = frozenlake.render_lake(rows, trace["states"][0], canvas)
                    text = frozenlake.question(actions)
                samples.append(Sample(f"mvot-frozenlake-{level.name}-{env_id}-{data_id}", image, text, answer,
                                      "mvot", "frozenlake", list("ABC"), trace))
    return samples


def load_maze(root: Path, images: str = "mvot", canvas: int = 64) -> list[Sample]:
    """Every distinct maze path, as `MazeTask` samples would hold it, with MVoT's label."""
    samples = []
    for data_file in sorted((root / "maze").glob("grid*.json")):
        seen = []
        for item in _read_json(data_file):
            if item["path_locs"] in seen:
                continue
            seen.append(item["path_locs"])
            n = int(item["grid_num"])
            actions = []
            for a in item["action_list"]:
                word, count = a.split("-")
                if word not in MOVES:
                    raise VrmError(f"{data_file}: unknown MVoT action {a!r}")
                actions += [word] * int(count)
            candidates = [list(c) for c in item["candidate_locs"]]
            end = list(item["path_locs"][-1])
            trace = {"size": n, "canvas": canvas, "maze": maze_rows(item["maze_info"], n),
                     "start": list(item["path_locs"][0]), "actions": actions,
                     "states": [list(c) for c in item["path_locs"]], "candidates": candidates,
                     "mvot": {"path_id": item["path_id"], "maze_info": item["maze_info"],
                              "images": item["file_prefix"]}}
            if images == "mvot":
                image = load_image(data_file.parent / f"{item['file_prefix'].split('/', 1)[1]}_1.jpg")
                text = maze.question(actions, start="red point")
            else:
                image = maze.render_maze(trace["maze"], trace["states"][:1], candidates, canvas)
                text = maze.question(actions)
            if end not in candidates:
                raise VrmError(f"{data_file}: path {item['path_id']} ends at {end}, not a candidate")
            samples.append(Sample(f"mvot-maze-{data_file.stem}-{item['path_id']}", image, text,
                                  LETTERS[candidates.index(end)], "mvot", "maze", list(LETTERS), trace))
    return samples


@dataclass
class MvotTask:
    """MVoT's public FrozenLake and Maze samples as a dataset (``get(i)``, ``len``).

    Args:
        data_dir: the samples folder (default: `find_data_dir`).
        images: "mvot" (MVoT's own pictures) or "vrm" (vrm's renderings of the same episodes, the
            pictures a vrm model is trained on).
        canvas: image side of vrm's renderings.
    """

    data_dir: str | None = None
    images: str = "mvot"
    canvas: int = 64
    name: str = "mvot"
    families: tuple[str, ...] = field(init=False, default=("frozenlake", "maze"))
    _samples: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.images not in IMAGES:
            raise ValueError(f"images must be one of {list(IMAGES)}, got {self.images!r}")
        root = find_data_dir(self.data_dir)
        self._samples = load_frozenlake(root, self.images, self.canvas) + load_maze(root, self.images, self.canvas)
        self._tasks = {"frozenlake": frozenlake.FrozenLakeTask(canvas=self.canvas),
                       "maze": maze.MazeTask(canvas=self.canvas)}

    def __len__(self) -> int:
        return len(self._samples)

    def get(self, index: int) -> Sample:
        return self._samples[index]

    def sample(self, seed: int) -> Sample:
        return self.get(random.Random(f"{self.name}-{seed}").randrange(len(self)))

    def score(self, sample: Sample, answer: str) -> float:
        return self._tasks[sample.family].score(sample, answer)

    def caption(self, sample: Sample) -> str:
        return self._tasks[sample.family].caption(sample)

    def explain(self, sample: Sample) -> Explanation:
        return self._tasks[sample.family].explain(sample)

    def render(self, trace: dict, step: int = -1):
        """vrm's rendering of a state of either kind of episode."""
        return self._tasks["maze" if "maze" in trace else "frozenlake"].render(trace, step)
