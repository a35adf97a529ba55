"""The video frame path decodes frames at the rate and size the visual extractor needs: at most ``max_frames``
evenly spaced frames of an utterance's span are converted, each scaled to 640 px (a 1080p video once held every
frame of a span at full size: 8.5 GB for 40 s; the memory itself is measured in benchmarks/video_memory.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FPS, W, H = 25, 1280, 720


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 720p showing frame i as a white bar at x = 16 i (read back exactly at any scale)."""
    av = pytest.importorskip("av")
    path = tmp_path_factory.mktemp("video") / "count.mp4"
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=FPS, options={"qscale": "2"})
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        for i in range(3 * FPS):
            img = np.zeros((H, W, 3), np.uint8)
            img[:, 16 * i:16 * i + 16] = 255
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    return path


def numbers(frames: tuple[np.ndarray, ...]) -> list[int]:
    out = []
    for f in frames:
        cols = np.flatnonzero(f.mean(axis=(0, 2)) > 128) * (W / f.shape[1])
        out.append(int(cols.mean() // 16))
    return out


def test_spans_give_few_small_frames_from_the_right_time(clip: Path) -> None:
    from stream.capture.video import VideoFrames

    v = VideoFrames(clip)
    try:
        a = v.frames_between(0.5, 1.5, 4)
        assert [f.shape for f in a] == [(360, 640, 3)] * 4  # the longer side at 640 px
        assert all(abs(n - e) <= 1 for n, e in zip(numbers(a), [15.6, 21.9, 28.1, 34.4], strict=True)), numbers(a)
        b = v.frames_between(2.0, 2.9, 8)  # the next span: decoding goes on from where it was
        assert len(b) == 8 and all(49 <= n <= 74 for n in numbers(b)) and numbers(b) == sorted(numbers(b))
        assert v.converted == 12  # only the frames handed out were converted, not the 60 decoded
        c = v.frames_between(0.0, 0.2, 8)  # an earlier span seeks back
        assert c and all(0 <= n <= 6 for n in numbers(c)), numbers(c)
        assert v.frames_between(10.0, 11.0, 8) == ()  # past the end
    finally:
        v.close()


def test_a_short_span_gives_each_frame_once(clip: Path) -> None:
    from stream.capture.video import VideoFrames

    v = VideoFrames(clip)
    try:
        got = numbers(v.frames_between(1.0, 1.12, 8))  # 4 frames shown in 0.12 s
        assert got == [25, 26, 27, 28], got
    finally:
        v.close()


def test_no_video_track_is_one_clear_error(tmp_path: Path) -> None:
    from stream.capture.video import VideoFrames
    from tests.extractors.extractor_media import write_wav

    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(1600, np.float32))
    with pytest.raises(ValueError, match="a.wav: has no video track"):
        VideoFrames(wav)


def test_camera_frames_are_scaled_to_what_the_visual_path_needs() -> None:
    pytest.importorskip("cv2")
    from stream.capture.video import fit_frame, fitted_size

    hd = np.zeros((1080, 1920, 3), np.uint8)
    assert fit_frame(hd).shape == (360, 640, 3)
    small = np.zeros((240, 320, 3), np.uint8)
    assert fit_frame(small) is small  # never enlarged
    assert fitted_size(1080, 1920) == (360, 640) and fitted_size(3, 5) == (2, 4)
