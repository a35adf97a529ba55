"""``--channels-as-speakers``: a recording with one person per channel (phone calls, podcasts, interviews) as
one session whose speakers are its channels, so who is speaking comes for free instead of from diarisation.

Each channel runs through its own :class:`.audiofile.AudioFileSource` (its own decode of that channel, VAD,
ASR; the fixed speaker name "Channel N"), and a merger hands their utterances to the runtime in order of
their end time, as one conversation: an utterance is released once every other channel has ended, has given
an utterance ending no earlier, or has been decoded :data:`SLACK_S` past its end (a quiet channel holds the
others back by that much at most). Utterance ids get the channel as a prefix (``c2-a0003``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
from pathlib import Path
from typing import Any

from ..frames import ErrorFrame, Utterance
from ..params import MicParams, VadParams
from .audiofile import AudioFileSource
from .base import UtteranceSink

SLACK_S = 30.0
"""How far past an utterance's end another channel must be decoded before it may be released without hearing
from that channel (the block queue, the VAD's closing silence and an ASR call in flight fit well inside)."""


def channel_speaker(channel: int) -> str:
    """The speaker name of a 0-based channel."""
    return f"Channel {channel + 1}"


class _Merger:
    """k-way merge of the channels' utterances (each channel's own come in time order) by end time."""

    def __init__(self, sink: UtteranceSink, children: list[AudioFileSource]) -> None:
        self.sink = sink
        self.children = children
        self.last_end = [-math.inf] * len(children)
        self.done = [False] * len(children)
        self._heap: list[tuple[float, int, Utterance]] = []
        self._seq = 0
        self._lock = asyncio.Lock()  # releases from two channels' tasks stay in order

    def _safe(self, t_end: float) -> bool:
        return all(self.done[d] or self.last_end[d] >= t_end or child.decoded_s >= t_end + SLACK_S
                   for d, child in enumerate(self.children))

    async def release(self, everything: bool = False) -> None:
        async with self._lock:
            while self._heap and (everything or self._safe(self._heap[0][0])):
                await self.sink.submit(heapq.heappop(self._heap)[2])

    async def submit(self, channel: int, utt: Utterance) -> None:
        self.last_end[channel] = max(self.last_end[channel], utt.t_end)
        self._seq += 1
        heapq.heappush(self._heap, (utt.t_end, self._seq, utt))
        await self.release()


class _ChannelSink:
    """What one channel's source sees: its utterances go to the merger, renamed; its end is remembered."""

    def __init__(self, merger: _Merger, channel: int) -> None:
        self.merger = merger
        self.channel = channel

    async def submit(self, utt: Utterance) -> None:
        await self.merger.submit(self.channel, dataclasses.replace(
            utt, utterance_id=f"c{self.channel + 1}-{utt.utterance_id}"))

    def end_session(self, session_id: str) -> None:
        self.merger.done[self.channel] = True

    def report(self, error: ErrorFrame) -> None:
        self.merger.sink.report(error)


class ChannelSpeakersSource:
    """One recording, one session, one speaker per channel (``live.py --channels-as-speakers``).

    Args:
        session_id: the session.
        path: the audio or video file.
        channels: how many channels it has (what :func:`.audiofile.probe` returns).
        mic: VAD, ASR and block size (its ``speaker`` is replaced by "Channel N").
        vad: segmentation parameters.
        options: :class:`.audiofile.AudioFileSource`'s (speed, video, the shared ASR service, ...).
    """

    def __init__(self, session_id: str, path: str | Path, channels: int, mic: MicParams, vad: VadParams,
                 **options: Any) -> None:
        self.session_id = session_id
        self.path = Path(path)
        self.children = [AudioFileSource(session_id, path, dataclasses.replace(mic, speaker=channel_speaker(c)),
                                         vad, channel=c, **options) for c in range(channels)]
        self.name = self.children[0].name

    @property
    def failed(self) -> str | None:
        """The first channel's failure (one line naming the file), None when every channel was analysed."""
        return next((c.failed for c in self.children if c.failed), None)

    @property
    def decoded_s(self) -> float:
        return max(c.decoded_s for c in self.children)

    async def run(self, sink: UtteranceSink) -> None:
        merger = _Merger(sink, self.children)
        try:
            async with asyncio.TaskGroup() as tg:
                for c, child in enumerate(self.children):
                    tg.create_task(child.run(_ChannelSink(merger, c)))
            await merger.release(everything=True)
        finally:
            sink.end_session(self.session_id)
