"""Authenticated, access-controlled, TLS-encrypted MQTT against a real mosquitto configured by the test."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiomqtt
import pytest

from stream.mqtt import topics
from stream.mqtt.backoff import Backoff
from stream.mqtt.client import install_loop_exception_handler
from stream.mqtt.publisher import SpoolPublisher
from stream.mqtt.settings import ENV_PASSWORD, ENV_USERNAME, MqttSettings
from stream.mqtt.spool import Spool

from .conftest import make_passwd, make_pki

pytestmark = [pytest.mark.mqtt]

ANALYZER_PW = "An4lyzer-s3cret!"
VIEWER_PW = "v1ewer-pw-XYZ"

ACL = """\
user analyzer
topic readwrite pcgnet/#

user viewer
topic read pcgnet/+/emotion
topic read pcgnet/$status/+
"""


@pytest.fixture
def secure_broker(broker_factory, tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    passwd = make_passwd(tmp_path / "passwd", {"analyzer": ANALYZER_PW, "viewer": VIEWER_PW})
    (tmp_path / "acl").write_text(ACL)
    broker = broker_factory(
        extra="\n".join([
            f"cafile {pki['ca']}", f"certfile {pki['server_crt']}", f"keyfile {pki['server_key']}",
            "require_certificate true", "use_identity_as_username false",
            "allow_anonymous false", f"password_file {passwd}", f"acl_file {tmp_path / 'acl'}",
        ]),
    )
    broker.start()
    return broker, pki


def settings_for(broker, pki, url_user: str = "", *, env=None, ca=None) -> MqttSettings:
    return MqttSettings.from_url(
        f"mqtts://{url_user}127.0.0.1:{broker.port}", env=env or {}, ca_file=str(ca or pki["ca"]),
        cert_file=str(pki["client_crt"]), key_file=str(pki["client_key"]),
    )


async def connect_fails(settings: MqttSettings) -> str:
    with pytest.raises(aiomqtt.MqttError) as info:
        async with aiomqtt.Client(**settings.client_kwargs(timeout_s=5)):
            pass
    return str(info.value)


def test_auth_acl_tls(secure_broker, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    broker, pki = secure_broker

    async def main() -> None:
        install_loop_exception_handler()
        # credentials from the environment, not the command line
        analyzer = settings_for(broker, pki, env={ENV_USERNAME: "analyzer", ENV_PASSWORD: ANALYZER_PW})
        viewer = settings_for(broker, pki, f"viewer:{VIEWER_PW}@")

        # refused: anonymous, wrong password, plain TCP to the TLS port, a CA that did not sign the server
        anon = await connect_fails(settings_for(broker, pki))
        wrong = await connect_fails(settings_for(broker, pki, "viewer:not-the-password@"))
        assert "authori" in anon.lower() and "authori" in wrong.lower(), (anon, wrong)
        await connect_fails(MqttSettings.from_url(f"mqtt://analyzer:{ANALYZER_PW}@127.0.0.1:{broker.port}", env={}))
        other_ca = make_pki(tmp_path / "other", name="otherca")
        bad_ca = await connect_fails(settings_for(broker, pki, f"viewer:{VIEWER_PW}@", ca=other_ca["ca"]))
        assert "certificate" in bad_ca.lower() or "ssl" in bad_ca.lower(), bad_ca

        received: list[tuple[str, dict]] = []
        async with aiomqtt.Client(**viewer.client_kwargs()) as sub:
            await sub.subscribe("pcgnet/#", qos=1)  # the ACL narrows what is delivered

            # the viewer may not inject utterances: the broker drops its publish to the input topic
            async with aiomqtt.Client(**analyzer.with_client_id("a-in").client_kwargs()) as listener:
                await listener.subscribe(topics.input_filter(), qos=1)
                await sub.publish(topics.input_topic("s1"), b'{"speaker":"X","text":"injected"}', qos=1)
                await listener.publish(topics.input_topic("s1"), b'{"speaker":"Y","text":"allowed"}', qos=1)

                spool = Spool(tmp_path / "spool")
                pub = SpoolPublisher(spool, backoff=Backoff(0.05, 0.5), label=analyzer.redacted_url())
                for kind in ("shift", "emotion"):  # a shift the viewer could read would arrive first
                    pub.submit(f"pcgnet/s1/{kind}", json.dumps({"kind": kind}).encode())
                task = asyncio.create_task(pub.run(lambda: aiomqtt.Client(**analyzer.client_kwargs())))

                async def collect() -> None:
                    async for m in sub.messages:
                        received.append((str(m.topic), json.loads(bytes(m.payload))))
                        if str(m.topic).endswith("emotion"):
                            return

                await asyncio.wait_for(collect(), 10)
                inputs = []
                try:
                    async with asyncio.timeout(0.5):
                        async for m in listener.messages:
                            inputs.append(json.loads(bytes(m.payload))["text"])
                except TimeoutError:
                    pass
                assert inputs == ["allowed"]  # ACL: the viewer's publish to in/utterance was dropped
                task.cancel()
                spool.close()
        assert ("pcgnet/s1/emotion", {"kind": "emotion"}) in received
        assert not any(t.endswith("/shift") for t, _ in received)  # ACL: viewer may not read shift
        assert "***" in str(analyzer) and ANALYZER_PW not in repr(analyzer)

    asyncio.run(main())
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert ANALYZER_PW not in logged and VIEWER_PW not in logged
