"""Scale-out: many analyzer workers behind one MQTT 5 broker, each conversation owned by one worker.

Modules: ``records`` (topics and retained records), ``ownership`` (the no-two-owners rule),
``sequencer`` (exactly-once, in-order inputs), ``statecodec`` (the state blob), ``backend`` (the seam to
the model), ``worker`` (the process), ``feeder`` (publishing inputs that survive a hand-off),
``pcgnet_backend`` (the causal PCGNet behind the seam). Deployment: docs/deployment.md.
"""

from __future__ import annotations

from stream.cluster.backend import Conversation, ConversationBackend, Snapshot
from stream.cluster.feeder import Feeder
from stream.cluster.ownership import ClusterView
from stream.cluster.records import AckRecord, OwnerRecord, WorkerRecord
from stream.cluster.sequencer import Sequencer
from stream.cluster.statecodec import StateBlob, StateError, decode_state, encode_state
from stream.cluster.worker import Worker
from stream.params import WorkerParams

__all__ = [
    "AckRecord",
    "ClusterView",
    "Conversation",
    "ConversationBackend",
    "Feeder",
    "OwnerRecord",
    "Sequencer",
    "Snapshot",
    "StateBlob",
    "StateError",
    "Worker",
    "WorkerParams",
    "WorkerRecord",
    "decode_state",
    "encode_state",
]
