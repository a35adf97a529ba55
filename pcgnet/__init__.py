"""PCGNet: persona-infused cross-task graph network for emotion recognition and emotion-shift detection.

Re-implementation of Tu et al., SIGIR 2024, plus a causal variant that runs one utterance at a time.
"""

from pcgnet.config import DATASETS, PCGNetConfig

__all__ = ["DATASETS", "PCGNetConfig"]
