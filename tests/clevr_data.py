"""The CLEVR data folder the clevr tests read (../shared/data/clevr), and the skip where it is absent."""

import pytest

from vrm import VrmError
from vrm.tasks.clevr.data import ENV_VAR, find_data_dir

try:
    DATA = find_data_dir()
except VrmError:
    DATA = None
needs_data = pytest.mark.skipif(DATA is None, reason=f"CLEVR data folder not found (set {ENV_VAR} to shared/data/clevr)")
