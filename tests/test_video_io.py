"""Videos in and out (diffface.video_io) on tiny synthetic clips written with PyAV here."""

from __future__ import annotations

import os
import sys
import wave

import numpy as np
import pytest
from PIL import Image

from diffface.atomic_io import temporary_path
from diffface.video_io import (ANIMATION_SUFFIXES, VideoInfo, extract_frames, frame_path, is_video, read_video_frames,
                               video_info, write_animation)

INSTALL = 'pip install "diffface[video]"'
WIDTH, HEIGHT, FRAMES, FPS = 64, 48, 12, 10
SQUARE, STEP, TOP = 8, 4, 20  # an 8 px bright square moving 4 px right per frame, rows 20-27


@pytest.fixture(scope="module")
def av(optional_import):
    return optional_import("av", INSTALL)


def square_frame(k: int) -> np.ndarray:
    """Frame k of the synthetic clip. Shape: -> (48, 64, 3) uint8."""
    frame = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
    frame[TOP:TOP + SQUARE, STEP * k:STEP * k + SQUARE] = 235
    return frame


def write_clip(av, path, frames=FRAMES, rotation=None, options=None):
    """The moving square as H.264 (else MPEG-4) with PyAV directly, independent of the code under test."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(square_frame(k), format="rgb24")))
        container.mux(stream.encode())
    return path


def square_centre(image: np.ndarray) -> np.ndarray:
    """(x, y) centre of the bright pixels. Shape: (H, W, 3) -> (2,)."""
    rows, cols = np.nonzero(image[..., 0] > 128)
    return np.array([cols.mean(), rows.mean()])


@pytest.fixture(scope="module")
def clip(av, tmp_path_factory):
    return write_clip(av, tmp_path_factory.mktemp("clip") / "clip.mp4")


def test_is_video():
    assert is_video("a/talk.MP4") and is_video("x.webm") and is_video("x.mkv")
    assert not is_video("face.png") and not is_video("clip.mp4.pts")


def test_video_info(clip):
    info = video_info(clip)
    assert info == VideoInfo(frames=FRAMES, fps=FPS, width=WIDTH, height=HEIGHT, duration_s=info.duration_s)
    assert info.duration_s == pytest.approx(FRAMES / FPS, abs=0.05)


def test_frames_read_back_in_order_with_their_content(clip):
    frames = list(read_video_frames(clip))
    assert [index for index, _, _ in frames] == list(range(FRAMES))
    assert [time_s for _, time_s, _ in frames] == pytest.approx([k / FPS for k in range(FRAMES)], abs=1e-3)
    for k, (_, _, image) in enumerate(frames):
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        expected = np.array([STEP * k + (SQUARE - 1) / 2, TOP + (SQUARE - 1) / 2])
        np.testing.assert_allclose(square_centre(image), expected, atol=1.0)


def test_stride_and_max_frames(clip):
    assert [i for i, _, _ in read_video_frames(clip, stride=3)] == [0, 3, 6, 9]
    assert [i for i, _, _ in read_video_frames(clip, stride=5, max_frames=2)] == [0, 5]
    assert [i for i, _, _ in read_video_frames(clip, max_frames=4)] == [0, 1, 2, 3]
    _, _, tenth = list(read_video_frames(clip, stride=10))[1]
    assert square_centre(tenth)[0] == pytest.approx(STEP * 10 + 3.5, abs=1.0)
    for bad in ({"stride": 0}, {"stride": 1.5}, {"max_frames": 0}):
        with pytest.raises(ValueError, match="stride|max_frames"):
            list(read_video_frames(clip, **bad))


def test_rotated_video_comes_out_upright(av, tmp_path):
    """A display matrix (phones' portrait videos) is applied as players do: -90 degrees turns clockwise."""
    if not hasattr(getattr(av, "VideoStream", None), "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation")
    rotated = write_clip(av, tmp_path / "portrait.mp4", frames=2, rotation=-90)
    info = video_info(rotated)
    assert (info.width, info.height) == (HEIGHT, WIDTH)
    _, _, image = next(read_video_frames(rotated))
    assert image.shape == (WIDTH, HEIGHT, 3)
    np.testing.assert_allclose(square_centre(image), square_centre(np.rot90(square_frame(0), -1)), atol=1.0)


def test_extract_frames_names_content_and_resume(clip, tmp_path):
    out = tmp_path / "frames"
    # what a killed run (another process) leaves: a temporary file for frame 3, no frame 3
    mine = temporary_path(frame_path(clip, out, 3))
    leftover = mine.with_name(mine.name.replace(f".{os.getpid()}.tmp", ".4242.tmp"))
    out.mkdir()
    leftover.write_bytes(b"half a png")
    paths = extract_frames(clip, out, stride=3)
    assert [p.name for p in paths] == [f"clip_f{k:06d}.png" for k in (0, 3, 6, 9)]
    assert leftover not in paths and leftover.read_bytes() == b"half a png"  # left alone, not taken for a frame
    for path, (_, _, image) in zip(paths, read_video_frames(clip, stride=3)):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), image)  # PNG is lossless

    for path in paths:
        os.utime(path, (1_000_000_000, 1_000_000_000))
    paths[1].unlink()
    assert extract_frames(clip, out, stride=3) == paths
    assert [p.stat().st_mtime for p in paths if p != paths[1]] == [1_000_000_000] * 3  # not rewritten
    assert paths[1].is_file() and paths[1].stat().st_mtime != 1_000_000_000  # the missing one written again
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in paths]


def test_extract_frames_of_two_videos_share_a_folder(av, clip, tmp_path):
    other = write_clip(av, tmp_path / "other.mp4", frames=3)
    first = extract_frames(clip, tmp_path / "out", max_frames=2)
    second = extract_frames(other, tmp_path / "out")
    assert [p.name for p in first + second] == ["clip_f000000.png", "clip_f000001.png", "other_f000000.png",
                                                "other_f000001.png", "other_f000002.png"]


def test_a_failed_png_write_leaves_no_file(clip, tmp_path, monkeypatch):
    def broken_save(self, handle, *args, **kwargs):
        handle.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        extract_frames(clip, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def unreadable_files(av, folder):
    """name -> (file, the reason expected in the message)."""
    folder.mkdir(exist_ok=True)
    files = {}
    random_bytes = folder / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4000))
    files["random"] = (random_bytes, "not a readable video")
    # moov atom at the end (the default): cut in half, the index is gone
    whole = write_clip(av, folder / "whole.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(whole[:len(whole) // 2])
    files["truncated"] = (folder / "cut.mp4", "not a readable video")
    # moov atom first (+faststart): it opens, and decoding stops at the cut
    faststart = write_clip(av, folder / "faststart.mp4", options={"movflags": "+faststart"}).read_bytes()
    (folder / "faststart_cut.mp4").write_bytes(faststart[:len(faststart) * 2 // 3])
    files["truncated after the index"] = (folder / "faststart_cut.mp4", "decod")
    with wave.open(str(folder / "sound.wav"), "wb") as sound:
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000), sound.writeframes(bytes(1600))
    files["audio only"] = (folder / "sound.wav", "no video stream")
    Image.fromarray(square_frame(0)).save(folder / "still.mp4", format="PNG")
    files["still image"] = (folder / "still.mp4", "still image")
    return files


@pytest.mark.parametrize("reader", ["info", "frames", "extract"])
def test_unreadable_videos_raise_value_error_naming_the_file(av, tmp_path, reader):
    for what, (path, reason) in unreadable_files(av, tmp_path / "bad").items():
        with pytest.raises(ValueError, match=reason) as caught:
            if reader == "info":
                video_info(path)
            elif reader == "frames":
                list(read_video_frames(path))
            else:
                extract_frames(path, tmp_path / "out")
        assert str(path) in str(caught.value), what
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        video_info(tmp_path / "missing.mp4")


def distinct_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """Frames that differ from each other (GIF/APNG writers merge identical neighbours)."""
    return [np.roll(square_frame(0)[:height, :width], 3 * k, axis=1) for k in range(count)]


@pytest.mark.parametrize("suffix", ANIMATION_SUFFIXES)
def test_write_animation_reads_back(av, tmp_path, suffix):
    frames = distinct_frames(5, 47, 63)  # odd sides: video encoders need them padded
    path = write_animation(tmp_path / f"turn{suffix}", frames, fps=5)
    assert path == tmp_path / f"turn{suffix}" and [p.name for p in tmp_path.iterdir()] == [path.name]
    if suffix in (".gif", ".png"):
        with Image.open(path) as animation:
            assert animation.n_frames == 5 and animation.size == (63, 47)
            if suffix == ".png":  # APNG is lossless
                for k in range(5):
                    animation.seek(k)
                    np.testing.assert_array_equal(np.asarray(animation.convert("RGB")), frames[k])
        return
    decoded = [image for _, _, image in read_video_frames(path)]
    assert len(decoded) == 5 and decoded[0].shape == (48, 64, 3)
    info = video_info(path)
    assert info.fps == pytest.approx(5) and info.frames == 5
    for image, frame in zip(decoded, frames):
        np.testing.assert_allclose(square_centre(image[:47, :63]), square_centre(frame), atol=1.0)


def test_write_animation_rejects_bad_input(tmp_path):
    frames = distinct_frames(2, 48, 64)
    with pytest.raises(ValueError, match=r"\.gif, \.png, \.mp4, \.webm"):
        write_animation(tmp_path / "turn.avi", frames)
    with pytest.raises(ValueError, match="at least one frame"):
        write_animation(tmp_path / "turn.gif", [])
    with pytest.raises(ValueError, match="frame 1: size"):
        write_animation(tmp_path / "turn.png", [frames[0], frames[1][:40]])
    with pytest.raises(ValueError, match=r"frame 0: expected \(H, W, 3\) uint8"):
        write_animation(tmp_path / "turn.gif", [frames[0].astype(np.float32)])
    with pytest.raises(ValueError, match="fps"):
        write_animation(tmp_path / "turn.gif", frames, fps=0)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


def test_a_bad_frame_in_a_video_leaves_no_file(av, tmp_path):
    frames = distinct_frames(3, 48, 64)
    with pytest.raises(ValueError, match="frame 2: size"):
        write_animation(tmp_path / "turn.mp4", [frames[0], frames[1], frames[2][:40]])
    assert list(tmp_path.iterdir()) == []


def test_missing_pyav_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(ImportError, match=r'pip install "diffface\[video\]"'):
        video_info(tmp_path / "clip.mp4")
    with pytest.raises(ImportError, match=r'pip install "diffface\[video\]"'):
        write_animation(tmp_path / "turn.mp4", distinct_frames(2, 48, 64))
    write_animation(tmp_path / "turn.gif", distinct_frames(2, 48, 64))  # Pillow formats need no PyAV
    assert not (tmp_path / "turn.mp4").exists()
