"""The outside robot of the outage tests: a persistent-session subscriber that survives broker restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

import aiomqtt

from stream.mqtt.backoff import Backoff
from stream.mqtt.settings import MqttSettings


async def persistent_subscriber(settings: MqttSettings, topics: Iterable[str], got: list[Any], ready: asyncio.Event,
                                keep: Callable[[dict], Any] = lambda event: event) -> None:
    """Appends ``keep(event)`` of every message, reconnecting with the same client id and a persistent session."""
    backoff = Backoff(initial_s=0.05, max_s=0.3)
    while True:
        try:
            async with aiomqtt.Client(**settings.client_kwargs(session_expiry_s=600)) as client:
                backoff.reset()
                for topic in topics:
                    await client.subscribe(topic, qos=1)
                ready.set()
                async for message in client.messages:
                    got.append(keep(json.loads(bytes(message.payload))))
        except aiomqtt.MqttError:
            await asyncio.sleep(backoff.next_delay())
