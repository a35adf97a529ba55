"""``live.py`` against a password + ACL + mutual-TLS mosquitto: it works, and the secret never shows up
in --help, stdout/stderr (at DEBUG), the JSONL events or anything published on the broker."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiomqtt
import pytest

from stream.mqtt.client import install_loop_exception_handler
from stream.mqtt.settings import MqttSettings

from .conftest import make_passwd, make_pki

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
SECRET = "Sup3r-S3cret-pw"
pytestmark = [pytest.mark.mqtt, pytest.mark.slow]


async def live(*argv: str, env_extra: dict[str, str] | None = None) -> tuple[int, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT), **(env_extra or {}))
    p = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "live.py"), *argv, cwd=ROOT, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), 120)
    return p.returncode or 0, out.decode(errors="replace")


def test_credentials_never_leak(broker_factory, tiny_checkpoint: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    pki = make_pki(tmp_path / "pki")
    passwd = make_passwd(tmp_path / "passwd", {"analyzer": SECRET, "auditor": "aud1tor"})
    (tmp_path / "acl").write_text("user analyzer\ntopic readwrite pcgnet/#\n\nuser auditor\ntopic read #\n")
    broker = broker_factory(
        extra=f"cafile {pki['ca']}\ncertfile {pki['server_crt']}\nkeyfile {pki['server_key']}\n"
              f"require_certificate true\nallow_anonymous false\npassword_file {passwd}\nacl_file {tmp_path / 'acl'}")
    broker.start()
    tls = ["--mqtt-ca", str(pki["ca"]), "--mqtt-cert", str(pki["client_crt"]), "--mqtt-key", str(pki["client_key"])]
    common = ["--replay", str(DEMO), "--speed", "0", "--no-tui", "--checkpoint", str(tiny_checkpoint),
              "--log-level", "DEBUG", *tls]
    auditor = MqttSettings.from_url(f"mqtts://auditor:aud1tor@127.0.0.1:{broker.port}", env={},
                                    ca_file=str(pki["ca"]), cert_file=str(pki["client_crt"]),
                                    key_file=str(pki["client_key"]))

    async def main() -> tuple[list[tuple[int, str]], list[bytes]]:
        install_loop_exception_handler()
        seen: list[bytes] = []
        ready = asyncio.Event()

        async def audit() -> None:
            async with aiomqtt.Client(**auditor.client_kwargs()) as c:
                await c.subscribe("#", qos=1)
                ready.set()
                async for m in c.messages:
                    seen.append(str(m.topic).encode() + b" " + bytes(m.payload))

        task = asyncio.create_task(audit())
        await asyncio.wait_for(ready.wait(), 10)
        runs = await asyncio.gather(
            # password in the URL, over TLS
            live(*common, "--mqtt", f"mqtts://analyzer:{SECRET}@127.0.0.1:{broker.port}",
                       "--events", str(tmp_path / "ev1.jsonl")),
            # password from the environment
            live(*common, "--mqtt", f"mqtts://127.0.0.1:{broker.port}", "--events", str(tmp_path / "ev2.jsonl"),
                       env_extra={"PCGNET_MQTT_USERNAME": "analyzer", "PCGNET_MQTT_PASSWORD": SECRET}),
            # a wrong password: refused, reported, still no secret
            live(*common, "--mqtt", f"mqtts://analyzer:{SECRET}x@127.0.0.1:{broker.port}"),
        )
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return runs, seen

    runs, seen = asyncio.run(main())
    (rc1, out1), (rc2, out2), (rc3, out3) = runs
    # a malformed URL carrying the secret, and --help with the secret in the environment: through the same
    # main() as live.py, in-process (both end before any model loads)
    from stream.app import main as live_main

    capsys.readouterr()
    rc4 = live_main([*common, "--mqtt", f"mqtts://analyzer:{SECRET}@127.0.0.1:notaport"])
    cap = capsys.readouterr()
    out4 = cap.out + cap.err
    monkeypatch.setenv("PCGNET_MQTT_PASSWORD", SECRET)
    with pytest.raises(SystemExit):
        live_main(["--help"])
    cap = capsys.readouterr()
    out5 = cap.out + cap.err
    assert "PCGNET_MQTT_PASSWORD" in out5
    assert rc1 == 0 and rc2 == 0, out1 + out2
    assert "mqtts://analyzer:***@127.0.0.1" in out1  # the redacted form is what gets logged
    assert rc4 != 0 and "***" in out4
    assert "not authori" in out3.lower() or "unavailable" in out3.lower(), out3
    for text in (out1, out2, out3, out4, out5):
        assert SECRET not in text
        assert "Traceback" not in text
    for f in ("ev1.jsonl", "ev2.jsonl"):
        events = (tmp_path / f).read_text()
        assert len([x for x in events.splitlines() if '"emotion"' in x]) == 11
        assert SECRET not in events
    # what the broker carried: the events of both good runs (over TLS, authenticated), never the secret
    emotion = [s for s in seen if s.startswith(b"pcgnet/demo/emotion ")]
    assert len(emotion) == 22
    assert not any(SECRET.encode() in s for s in seen)
    print(f"\ncredentials: 2 authenticated TLS runs delivered {len(emotion)} emotion events; "
          f"{len(seen)} messages audited, 0 contain the secret; wrong password -> rc={rc3}")
