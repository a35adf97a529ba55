"""A session keeps the recent text a context-reading extractor needs, bounded, and hands it over."""

from __future__ import annotations

from stream.params import PersonaParams
from stream.session import PersonaTracker, SessionState


def _state(n: int) -> SessionState:
    return SessionState("s", None, 9, PersonaTracker(5, PersonaParams()), context_utterances=n)


def test_recent_text_is_bounded_skips_empty_and_survives_export():
    st = _state(2)
    for spk, text in (("A", "one"), ("B", ""), ("B", "two"), ("A", None), ("C", "three")):
        st.heard(spk, text)
    assert list(st.recent) == [("B", "two"), ("C", "three")]
    moved = _state(2)
    moved.restore(st.export())
    assert list(moved.recent) == list(st.recent)
    none = _state(0)  # a context-free model keeps nothing
    none.heard("A", "one")
    assert list(none.recent) == []
