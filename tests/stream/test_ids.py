"""stream/ids.py: an untrusted id as one file name that stays inside its folder (issue 24: a session id
"." once recorded into the record root, ".." above it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.ids import MAX_ID_BYTES, safe_path_component


@pytest.mark.parametrize("raw", [".", "..", "...", ".hidden", "a/../b", "/etc/passwd", "a\\b", "a\x00b", "~", "Zoë",
                                 "\u202eevil", "con", " "])
def test_hostile_ids_stay_one_plain_name(raw: str, tmp_path: Path) -> None:
    name = safe_path_component(raw)
    assert name not in (".", "..") and not name.startswith(".")
    assert set(name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.%~")
    (tmp_path / "root" / name).mkdir(parents=True)  # a real folder, inside root
    assert [p.name for p in (tmp_path / "root").iterdir()] == [name]


def test_readable_ids_stay_readable() -> None:
    assert safe_path_component("meeting-2024_01.A") == "meeting-2024_01.A"


def test_empty_and_non_string_rejected() -> None:
    with pytest.raises(ValueError):
        safe_path_component("")
    with pytest.raises(ValueError):
        safe_path_component(None)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_any_text_is_one_bounded_name_inside_its_folder(raw: str) -> None:
    name = safe_path_component(raw)
    assert name and "/" not in name and "\x00" not in name and not name.startswith(".")
    assert len(name.encode("utf-8")) <= MAX_ID_BYTES
    root = Path("/records")
    assert (root / name).resolve().parent == root


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=150), st.text(min_size=1, max_size=150))
def test_distinct_ids_distinct_names(a: str, b: str) -> None:
    if a != b:
        assert safe_path_component(a) != safe_path_component(b)
