"""Per-utterance features, voice activity, speech-to-text and speaker clustering, fully offline.

``base`` (the contract), ``registry`` (name -> extractor), ``text``, ``audio``, ``visual``, ``vad``, ``asr``,
``speaker``, ``workers`` (off-loop execution), ``sessions`` + ``cli`` (``pcgnet extract`` / ``pcgnet extractors``).
Heavy packages are imported inside the modules that need them; see docs/extractors.md.
"""
