"""PCGNet's graph operators, one per file (PyG style)."""

from pcgnet.layers.interactive_gat import InteractiveGATConv
from pcgnet.layers.persona_gat import PersonaGATConv

__all__ = ["InteractiveGATConv", "PersonaGATConv"]
