"""MQTT connection settings parsed from a broker URL, with credentials kept out of every log line.

``--mqtt mqtt://[user:pass@]host:port`` (or ``mqtts://`` for TLS) becomes one frozen
:class:`MqttSettings`. Credentials may instead come from ``PCGNET_MQTT_USERNAME`` /
``PCGNET_MQTT_PASSWORD`` so that they never appear on a command line (``ps`` shows command lines to
every local user). The password is excluded from ``repr``/``str`` and from :meth:`MqttSettings.redacted_url`,
which is the only form of the URL the runtime should ever log or put into an event.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "ENV_PASSWORD",
    "ENV_USERNAME",
    "MqttSettings",
]

ENV_USERNAME = "PCGNET_MQTT_USERNAME"
ENV_PASSWORD = "PCGNET_MQTT_PASSWORD"

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_REDACTED = "***"


@dataclass(frozen=True)
class MqttSettings:
    """Everything needed to open one ``aiomqtt.Client``.

    Args:
        host: Broker host name or IP address.
        port: Broker TCP port (1883 for ``mqtt://``, 8883 for ``mqtts://`` by default).
        username: Optional user name.
        password: Optional password; never shown by ``repr``/``str``.
        tls: Use TLS (set by the ``mqtts://`` scheme).
        ca_file: PEM bundle that signs the broker certificate (system store when ``None``).
        cert_file: Client certificate (PEM) for mutual TLS.
        key_file: Private key of ``cert_file``.
        tls_insecure: Skip the host-name check of the broker certificate. Off by default; only for
            test brokers whose certificate names another host.
        client_id: MQTT client identifier; a random one is chosen by paho when ``None``.
        keepalive_s: MQTT keep-alive interval in seconds.
    """

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    client_id: str | None = None
    keepalive_s: int = 60

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in "/@ \t\r\n\x00"):
            raise ValueError(f"MQTT host {self.host!r} is not a valid host name")
        if not 0 < self.port < 65536:
            raise ValueError(f"MQTT port {self.port} is out of range 1..65535")
        if not 0 < self.keepalive_s <= 65535:
            raise ValueError(f"MQTT keepalive {self.keepalive_s} s is out of range 1..65535")
        if self.password is not None and self.username is None:
            raise ValueError("an MQTT password was given without a user name")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("MQTT client certificate and key must be given together (cert_file and key_file)")
        if not self.tls and (self.ca_file or self.cert_file or self.tls_insecure):
            raise ValueError("TLS options (CA file, client certificate, insecure) need an mqtts:// URL")

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        env: Mapping[str, str] | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls_insecure: bool = False,
        client_id: str | None = None,
        keepalive_s: int = 60,
    ) -> MqttSettings:
        """Parses ``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``.

        Credentials in the URL win; missing ones are taken from ``PCGNET_MQTT_USERNAME`` /
        ``PCGNET_MQTT_PASSWORD`` in ``env`` (``os.environ`` by default). Percent-encoded characters in
        the user name and password are decoded, so a password may contain ``@`` or ``:``.

        Raises:
            ValueError: the URL is malformed; the message shows the URL with the password redacted.
        """
        env = os.environ if env is None else env
        shown = _redact_url_text(url)
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:  # e.g. a non-numeric port
            raise ValueError(f"bad MQTT URL {shown!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"bad MQTT URL {shown!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"bad MQTT URL {shown!r}: no host (expected mqtt://[user:pass@]host:port)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"bad MQTT URL {shown!r}: unexpected path, query or fragment")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if username is None:
            username = env.get(ENV_USERNAME) or None
        if password is None and username is not None:
            password = env.get(ENV_PASSWORD) or None
        try:
            return cls(
                host=parts.hostname,
                port=port if port is not None else _DEFAULT_PORTS[scheme],
                username=username,
                password=password,
                tls=scheme == "mqtts",
                ca_file=ca_file,
                cert_file=cert_file,
                key_file=key_file,
                tls_insecure=tls_insecure,
                client_id=client_id,
                keepalive_s=keepalive_s,
            )
        except ValueError as exc:
            raise ValueError(f"bad MQTT URL {shown!r}: {exc}") from None

    def with_client_id(self, client_id: str) -> MqttSettings:
        """A copy with another client id (each connection of a process needs its own)."""
        return replace(self, client_id=client_id)

    # -- display ------------------------------------------------------------------------------------

    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***``: the only form fit for logs and events."""
        scheme = "mqtts" if self.tls else "mqtt"
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + _REDACTED
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"

    def __str__(self) -> str:
        return self.redacted_url()

    def __repr__(self) -> str:
        extras = []
        if self.tls:
            extras += [f"ca_file={self.ca_file!r}", f"cert_file={self.cert_file!r}", f"tls_insecure={self.tls_insecure}"]
        if self.client_id is not None:
            extras.append(f"client_id={self.client_id!r}")
        tail = (", " + ", ".join(extras)) if extras else ""
        return f"MqttSettings({self.redacted_url()!r}{tail})"

    # -- aiomqtt -------------------------------------------------------------------------------------

    def tls_parameters(self) -> aiomqtt.TLSParameters | None:
        """``aiomqtt.TLSParameters`` for this connection, or ``None`` without TLS."""
        if not self.tls:
            return None
        return aiomqtt.TLSParameters(
            ca_certs=self.ca_file,
            certfile=self.cert_file,
            keyfile=self.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def client_kwargs(
        self,
        *,
        will: aiomqtt.Will | None = None,
        session_expiry_s: int | None = None,
        timeout_s: float | None = 10.0,
        max_queued_incoming_messages: int | None = 1000,
    ) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client(**kwargs)`` (MQTT v5).

        Args:
            will: Last-will message (the ``pcgnet/$status/<client_id>`` "offline" message).
            session_expiry_s: When set, connect with ``clean_start=False`` and this session-expiry
                interval, so the broker keeps subscriptions and queued QoS 1 messages while the client
                is away (what a persistent subscriber needs). ``None`` = a clean session.
            timeout_s: aiomqtt's default operation timeout (a publish waiting for its PUBACK).
            max_queued_incoming_messages: Bound of aiomqtt's incoming queue (it discards beyond it
                with a warning), so a flood of input messages cannot grow memory without limit.
        """
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "identifier": self.client_id,
            "protocol": aiomqtt.ProtocolVersion.V5,
            "keepalive": self.keepalive_s,
            "timeout": timeout_s,
            "max_queued_incoming_messages": max_queued_incoming_messages,
        }
        if will is not None:
            kwargs["will"] = will
        if session_expiry_s is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(session_expiry_s)
            kwargs["properties"] = props
            kwargs["clean_start"] = False
        if self.tls:
            kwargs["tls_params"] = self.tls_parameters()
            kwargs["tls_insecure"] = self.tls_insecure
        return kwargs


def _redact_url_text(url: str) -> str:
    """Best-effort redaction of ``user:password@`` in raw, possibly malformed URL text."""
    text = str(url)
    head, sep, rest = text.partition("://")
    if not sep:
        head, rest = "", text
    at = rest.rfind("@")
    if at < 0:
        return text
    userinfo, hostpart = rest[:at], rest[at + 1 :]
    user, colon, _ = userinfo.partition(":")
    masked = user + (":" + _REDACTED if colon else "")
    return f"{head}{sep}{masked}@{hostpart}"
