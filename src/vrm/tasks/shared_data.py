"""Where third-party data read at run time lives: ``../shared/data/<name>`` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def data_candidates(name: str, env_var: str, data_dir: str | Path | None = None) -> list[Path]:
    """Folders that may hold ``shared/data/<name>``, in the order to try them.

    ``data_dir`` if given, else ``$env_var`` if set, else ``shared/data/<name>`` under every
    ancestor of this package (so an install inside the repository's venv finds it) and beside
    the working directory.
    """
    if data_dir or os.environ.get(env_var):
        return [Path(data_dir or os.environ[env_var])]
    sub = Path("shared") / "data" / name
    here = Path(__file__).resolve()
    return [a / sub for a in here.parents] + [Path.cwd().parent / sub, Path.cwd() / sub]
