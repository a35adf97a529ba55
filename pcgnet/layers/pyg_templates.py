"""PyG's generated ``propagate()`` / ``edge_updater()`` modules, kept out of the temp folder.

torch_geometric (2.5+) renders each MessagePassing subclass's ``propagate`` (and ``edge_updater``) from a
jinja template into ``NamedTemporaryFile(delete=False)`` in the temp folder, imports it, and never removes
it: three files per process for our two operators (849 had piled up on one machine). Once imported, a
module no longer needs its file; its lines are kept in ``linecache`` (so tracebacks and ``inspect`` still
show them) and the file is removed. PyG looks the module up in ``sys.modules`` before rendering again, so
each is generated once per process.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
import tempfile


def drop_generated_sources(cls: type) -> list[str]:
    """Removes the temp files of the modules PyG generated for ``cls``; returns their paths."""
    prefix = f"{cls.__module__}_{cls.__name__}_"
    tmp = os.path.realpath(tempfile.gettempdir())
    removed = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) if name.startswith(prefix) else None
        if not path or os.path.realpath(os.path.dirname(path)) != tmp or not os.path.exists(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError:
            continue
        # mtime None: linecache.checkcache keeps the entry although the file is gone
        linecache.cache[path] = (sum(map(len, lines)), None, lines, path)
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed
