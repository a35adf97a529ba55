"""Scale-out on NATS JetStream: many analyzer workers, each conversation stepped by one of them at a time.

JetStream does the distributed part: the durable, partitioned input log with de-duplication, one pinned
puller per partition (refusing a stale one), and compare-and-set progress. Modules: ``jetstream`` (the
stream, consumers, buckets and the pinned pull), ``progress`` (the per-conversation progress record and
state blobs), ``statecodec`` (the state blob, safetensors), ``backend`` (the seam to the model),
``worker`` (the processing loop), ``pcgnet_backend`` (the causal PCGNet behind the seam), ``cli``
(``live.py --worker``). Deployment: docs/deployment.md.
"""

from __future__ import annotations

from stream.cluster.backend import Conversation, ConversationBackend, Snapshot
from stream.cluster.jetstream import Layout
from stream.cluster.progress import Fenced, Progress, ProgressStore
from stream.cluster.statecodec import StateBlob, StateError, decode_state, encode_state
from stream.cluster.worker import NodeStats, Worker
from stream.params import WorkerParams

__all__ = [
    "Conversation",
    "ConversationBackend",
    "Fenced",
    "Layout",
    "WorkerParams",
    "NodeStats",
    "Progress",
    "ProgressStore",
    "Snapshot",
    "StateBlob",
    "StateError",
    "Worker",
    "decode_state",
    "encode_state",
]
