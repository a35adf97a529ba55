"""Dataset preparation and the full ``pcgnet`` command: the one package that may import every other one.

``meld`` (``pcgnet prepare-meld``: the MELD CSVs -> feature pickles), ``sessions`` + ``extract``
(``pcgnet extract``: recorded session folders -> feature pickles), ``pickles`` (the one writer of the
feature-pickle layout and its JSON sidecar that :mod:`pcgnet.data` reads) and ``cli`` (the ``pcgnet``
entry point, listing every sub-command of every package).
"""
