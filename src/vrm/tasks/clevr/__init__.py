"""CLEVR in vrm: scenes, a top-down renderer, a program executor, template instantiation, the task.

Modules: `data` (finding and reading CLEVR's third-party files), `scene` (sampling, relations),
`render` (PIL drawing), `executor` (running programs), `generate` (instantiating templates),
`task` (`ClevrTask`), `cli` (``vrm clevr execute|render``).

The question templates, metadata and synonyms this package reads are CLEVR's (Copyright (c)
2017-present, Facebook, Inc.) and CLEVR-Math's, under the BSD licence with an additional patent
grant; they are read at run time from the data folder, which holds their LICENSE and PATENTS.
"""

from vrm.tasks.clevr.executor import answer_token, execute
from vrm.tasks.clevr.task import FAMILIES, ClevrTask

__all__ = ["ClevrTask", "FAMILIES", "execute", "answer_token"]
