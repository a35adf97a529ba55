"""PyG renders our operators' ``propagate``/``edge_updater`` into files in the temp folder; none may stay
there after a process built the model (849 had piled up on one machine), and the generated code must still
run and show its source in tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]



def test_no_generated_file_is_left_in_the_temp_folder_and_the_source_stays_readable(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = (
        "import inspect, sys, torch\n"
        "from pcgnet.config import PCGNetConfig\n"
        "from pcgnet.model import PCGNet\n"
        "from pcgnet.layers import InteractiveGATConv, PersonaGATConv\n"
        "model = PCGNet(PCGNetConfig())\n"
        "gen = sorted(m for m in sys.modules if m.startswith('pcgnet.layers.') and m.endswith(('_propagate', '_edge_updater')))\n"
        "print(len(gen))\n"
        "print(all(len(inspect.getsource(c.propagate)) > 100 for c in (InteractiveGATConv, PersonaGATConv)))\n"
    )
    for _ in range(2):  # a second process must not leave anything either
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240,
                             env=dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT)))
        assert out.returncode == 0, out.stderr[-3000:]
        generated, readable = out.stdout.split()
        assert int(generated) == 3 and readable == "True"  # PyG did generate them, and they still read
        assert [p.name for p in tmp.iterdir() if p.is_file()] == []  # (torch's inductor cache is a folder, reused)
