"""Untrusted ids (session ids, speaker names) encoded as one harmless name: an MQTT topic level or a file name.

Why: ids come from users, transcripts and the MQTT input, so a raw id such as ``"a/b"``, ``"#"``, ``"$SYS"``,
``"."`` or ``".."`` could otherwise escape its topic level or its folder. Both encodings percent-encode
(UTF-8) every character outside a kept set, which is reversible and so collision-free for ids up to
:data:`MAX_ID_BYTES`; a longer id is cut and suffixed with ``~`` and a SHA-256 digest of the whole id (``~``
itself is always escaped, so a short id can never be crafted to collide with a long one's name).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable

__all__ = ["MAX_ID_BYTES", "encode_id", "escape", "safe_path_component"]

MAX_ID_BYTES = 128
"""Upper bound of one encoded id; longer ids are cut and get a digest suffix."""

_DIGEST_CHARS = 16
_PATH_CHARS = frozenset(string.ascii_letters + string.digits + "_-.")


def escape(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def encode_id(raw_id: str, keep: Callable[[str], bool], reserved_first: str, what: str) -> str:
    """``raw_id`` with every character that ``keep`` refuses percent-encoded, a first character in
    ``reserved_first`` encoded too, cut at :data:`MAX_ID_BYTES` UTF-8 bytes with a digest suffix.

    Raises:
        ValueError: ``raw_id`` is empty or not a string (``what`` names it in the message).
    """
    if not isinstance(raw_id, str):
        raise ValueError(f"{what} must be a string, got {type(raw_id).__name__}")
    if raw_id == "":
        raise ValueError(f"{what} must not be empty")
    parts = [ch if ch != "~" and keep(ch) else escape(ch) for ch in raw_id]  # "~" marks a cut id
    if parts[0] in reserved_first:
        parts[0] = escape(parts[0])
    name = "".join(parts)
    if len(name.encode("utf-8")) <= MAX_ID_BYTES:
        return name
    digest = hashlib.sha256(raw_id.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    budget = MAX_ID_BYTES - _DIGEST_CHARS - 1
    head: list[str] = []
    used = 0
    for piece in parts:  # cut on whole pieces so no escape sequence or UTF-8 character is split
        size = len(piece.encode("utf-8"))
        if used + size > budget:
            break
        head.append(piece)
        used += size
    return "".join(head) + "~" + digest


def safe_path_component(raw_id: str) -> str:
    """One file or folder name for an id: only ``[A-Za-z0-9_.-]``, never ``.``/``..`` or a hidden name
    (a leading ``.`` is encoded), never empty, at most :data:`MAX_ID_BYTES` bytes."""
    return encode_id(raw_id, _PATH_CHARS.__contains__, ".", "a file name id")
