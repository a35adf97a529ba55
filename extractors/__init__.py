"""Per-utterance features, voice activity, speech-to-text and speaker clustering, fully offline.

``base`` (the contract), ``registry`` (name -> extractor), ``text``, ``audio``, ``visual``, ``vad``, ``asr``,
``speaker``, ``workers`` (off-loop execution), ``meld_text`` (the MELD-fine-tuned MiniLM), ``cli``
(``pcgnet extractors``; ``pcgnet extract`` is :mod:`prepare.extract`).
Heavy packages are imported inside the modules that need them; see docs/extractors.md.
"""
