from __future__ import annotations

import ssl

import aiomqtt
import pytest

from stream.mqtt.settings import ENV_PASSWORD, ENV_USERNAME, MqttSettings


def test_plain_url_defaults() -> None:
    s = MqttSettings.from_url("mqtt://broker.local", env={})
    assert (s.host, s.port, s.tls, s.username, s.password) == ("broker.local", 1883, False, None, None)
    assert MqttSettings.from_url("mqtts://broker.local", env={}).port == 8883
    assert MqttSettings.from_url("mqtt://127.0.0.1:1999", env={}).port == 1999


def test_credentials_from_url_are_decoded_and_redacted() -> None:
    s = MqttSettings.from_url("mqtt://ana:p%40ss%3Aw0rd@h:1884", env={})
    assert s.username == "ana" and s.password == "p@ss:w0rd"
    for text in (repr(s), str(s), s.redacted_url(), f"{s}", f"{s!r}"):
        assert "p@ss" not in text and "w0rd" not in text
        assert "***" in text
    assert s.redacted_url() == "mqtt://ana:***@h:1884"


def test_credentials_from_env_and_url_wins() -> None:
    env = {ENV_USERNAME: "envuser", ENV_PASSWORD: "envsecret"}
    s = MqttSettings.from_url("mqtt://h", env=env)
    assert (s.username, s.password) == ("envuser", "envsecret")
    assert "envsecret" not in repr(s)
    s2 = MqttSettings.from_url("mqtt://urluser:urlpw@h", env=env)
    assert (s2.username, s2.password) == ("urluser", "urlpw")
    s3 = MqttSettings.from_url("mqtt://urluser@h", env=env)  # user in URL, password from env
    assert (s3.username, s3.password) == ("urluser", "envsecret")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://h:1883", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://h:notaport", "bad MQTT URL"),
        ("mqtt://h:70000", "bad MQTT URL"),
        ("mqtt://h:1883/some/path", "path"),
        ("h:1883", "scheme"),
    ],
)
def test_bad_urls_raise_value_error(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        MqttSettings.from_url(url, env={})


def test_bad_url_error_message_redacts_password() -> None:
    with pytest.raises(ValueError) as info:
        MqttSettings.from_url("mqtt://u:topsecret@h:xx", env={})
    assert "topsecret" not in str(info.value)


def test_tls_options_need_mqtts_and_cert_key_pairs() -> None:
    with pytest.raises(ValueError, match="mqtts"):
        MqttSettings.from_url("mqtt://h", ca_file="ca.pem", env={})
    with pytest.raises(ValueError, match="together"):
        MqttSettings.from_url("mqtts://h", cert_file="c.pem", env={})


def test_client_kwargs() -> None:
    s = MqttSettings.from_url("mqtts://u:pw@h:8884", ca_file="ca.pem", cert_file="c.pem", key_file="k.pem", env={})
    will = aiomqtt.Will("pcgnet/status", b"offline", qos=1, retain=True)
    kw = s.client_kwargs(will=will, session_expiry_s=300)
    assert kw["hostname"] == "h" and kw["port"] == 8884 and kw["password"] == "pw"
    assert kw["will"] is will and kw["clean_start"] is False
    assert kw["properties"].SessionExpiryInterval == 300
    tls = kw["tls_params"]
    assert isinstance(tls, aiomqtt.TLSParameters)
    assert (tls.ca_certs, tls.certfile, tls.keyfile, tls.cert_reqs) == ("ca.pem", "c.pem", "k.pem", ssl.CERT_REQUIRED)
    assert kw["tls_insecure"] is False
    plain = MqttSettings.from_url("mqtt://h", env={}).client_kwargs()
    assert "tls_params" not in plain and "clean_start" not in plain
