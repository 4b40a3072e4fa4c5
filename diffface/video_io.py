"""Videos in and out: frames of a video as RGB arrays or PNG files, and animations from frames.

Decoding and ``.mp4``/``.webm`` encoding go through PyAV (its wheels bundle FFmpeg), imported only
inside the functions that need it: ``pip install "diffface[video]"``. ``.gif`` and ``.png`` (APNG)
animations need only Pillow.

Frames come out upright: a rotation stored in the file (the display matrix phones write for portrait
videos) is applied, as video players do. Frame indices count decoded frames from 0; with ``stride``
only every ``stride``-th frame is converted (all are decoded, as inter-frame codecs require).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .atomic_io import atomic_write

INSTALL_HINT = 'pip install "diffface[video]"'

#: file endings treated as videos
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv")
#: file endings :func:`write_animation` writes
ANIMATION_SUFFIXES = (".gif", ".png", ".mp4", ".webm")
#: encoders tried in order for each video ending (the first one the installed FFmpeg has is used), and
#: their quality options; all take yuv420p frames, whose sides must be even
ENCODERS = {".mp4": ("libx264", "mpeg4"), ".webm": ("libvpx-vp9", "libvpx")}
ENCODER_OPTIONS = {"libx264": {"crf": "18"}, "mpeg4": {"qscale": "3"},
                   "libvpx-vp9": {"crf": "30", "b": "0"}, "libvpx": {"crf": "10", "b": "1M"}}
#: FFmpeg demuxers of still images: such a file is refused as "not a video"
STILL_IMAGE_FORMATS = ("image2",)


def _import_av() -> ModuleType:
    """``av`` (PyAV), or an ImportError giving the install command."""
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"reading or writing videos needs PyAV: {INSTALL_HINT} ({exc})") from exc
    return av


def is_video(path: str | Path) -> bool:
    """Whether ``path`` ends in one of :data:`VIDEO_SUFFIXES` (by name only; the file is not opened)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds.

    Attributes:
        frames: number of frames; from the container when it records it, else estimated as
            ``duration_s * fps`` (then ``frames_estimated``).
        fps: average frame rate (0 when the file gives none).
        width: frame width in pixels, after the file's rotation (as :func:`read_video_frames` gives frames).
        height: frame height in pixels, after rotation.
        duration_s: duration in seconds (0 when unknown).
        frames_estimated: ``frames`` is an estimate.
    """

    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    frames_estimated: bool = False


def _open_video(av: ModuleType, path: Path):
    """The opened container and its first video stream.

    Raises:
        FileNotFoundError: naming the file, when it does not exist.
        ValueError: naming the file and the reason, when FFmpeg cannot read it or it has no video stream.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: not a readable video ({exc})") from exc
    format_name = container.format.name
    if not container.streams.video or format_name in STILL_IMAGE_FORMATS or format_name.endswith("_pipe"):
        what = "a still image" if container.streams.video else "no video stream"
        container.close()
        raise ValueError(f"{path}: not a readable video ({what}; FFmpeg reads it as {format_name!r})")
    stream = container.streams.video[0]
    stream.codec_context.thread_type = "AUTO"  # frame threads: decoding is the bulk of the time
    return container, stream


def _upright(av_frame) -> np.ndarray:
    """A decoded frame as RGB uint8, turned by the rotation the file asks for. Shape: -> (H, W, 3) uint8."""
    rgb = av_frame.to_ndarray(format="rgb24")
    quarter_turns = int(round(getattr(av_frame, "rotation", 0) / 90.0)) % 4  # counterclockwise, as np.rot90
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _check_selection(stride: int, max_frames: int | None) -> None:
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride}")
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise ValueError(f"max_frames must be an integer >= 1 or None, got {max_frames}")


def _decoded_frames(path: str | Path, stride: int, max_frames: int | None) -> Iterator[tuple[int, float, object]]:
    """``(frame_index, time_s, av.VideoFrame)`` of the selected frames, undecoded to RGB.

    Raises:
        ValueError: naming the file, when it cannot be decoded or no frame decodes.
    """
    _check_selection(stride, max_frames)
    av = _import_av()
    path = Path(path)
    container, stream = _open_video(av, path)
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    decoded = yielded = 0
    with container:
        try:
            for index, av_frame in enumerate(container.decode(stream)):
                decoded += 1
                if index % stride:
                    continue
                time_s = float(av_frame.time) if av_frame.time is not None else (index / fps if fps else 0.0)
                yield index, time_s, av_frame
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            raise ValueError(f"{path}: not a readable video: decoding failed after {decoded} frames "
                             f"(corrupt or truncated? {exc})") from exc
    if decoded == 0:
        declared = f" although the file declares {stream.frames} (truncated?)" if stream.frames else ""
        raise ValueError(f"{path}: not a readable video: no frame could be decoded{declared}")


def read_video_frames(path: str | Path, stride: int = 1,
                      max_frames: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """The frames of a video, decoded one at a time.

    Args:
        path: the video file (any container and codec FFmpeg reads).
        stride: give every ``stride``-th frame (0, stride, 2·stride, ...).
        max_frames: stop after this many frames were given; None: all.

    Yields:
        ``(frame_index, time_s, image)``: the frame's index among all decoded frames, its presentation
        time in seconds, and the upright RGB picture.

    Raises:
        ImportError: PyAV is missing (the message gives the install command).
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and the reason, when it is not a readable video (corrupt, truncated,
            no video stream, no frame), or on a bad ``stride``/``max_frames``. Raised while iterating.

    Shape:
        image: (H, W, 3) uint8.

    Example:
        >>> for index, time_s, image in read_video_frames("talk.mp4", stride=5, max_frames=10):
        ...     print(index, round(time_s, 2), image.shape)
        0 0.0 (720, 1280, 3)
    """
    for index, time_s, av_frame in _decoded_frames(path, stride, max_frames):
        yield index, time_s, _upright(av_frame)


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, frame rate, size and duration of a video, from its headers and first frame.

    Raises:
        ImportError: PyAV is missing. FileNotFoundError: no such file.
        ValueError: naming the file, when it is not a readable video.

    Example:
        >>> video_info("talk.mp4")
        VideoInfo(frames=250, fps=25.0, width=1280, height=720, duration_s=10.0, frames_estimated=False)
    """
    av = _import_av()
    path = Path(path)
    container, stream = _open_video(av, path)
    with container:
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        else:
            duration_s = 0.0
        frames = int(stream.frames or 0)
        estimated = frames == 0
        if estimated:
            frames = int(round(duration_s * fps))
        width, height = stream.codec_context.width, stream.codec_context.height
    frames_iter = _decoded_frames(path, 1, 1)  # the rotation is known per frame; this also proves one decodes
    try:
        _, _, first = next(frames_iter)
    finally:
        frames_iter.close()
    if int(round(getattr(first, "rotation", 0) / 90.0)) % 2:
        width, height = height, width
    if duration_s == 0.0 and fps and not estimated:
        duration_s = frames / fps
    return VideoInfo(frames=frames, fps=fps, width=int(width), height=int(height), duration_s=duration_s,
                     frames_estimated=estimated)


def frame_path(video: str | Path, out_dir: str | Path, frame_index: int) -> Path:
    """Where :func:`extract_frames` puts a frame: ``out_dir/<video stem>_f<index, 6 digits>.png``."""
    return Path(out_dir) / f"{Path(video).stem}_f{frame_index:06d}.png"


def extract_frames(video: str | Path, out_dir: str | Path, stride: int = 1,
                   max_frames: int | None = None) -> list[Path]:
    """Write a video's frames as PNG files, resumably.

    Each file is written atomically (a temporary name, then a rename), so a killed run leaves whole
    frames only; a frame whose file exists is not converted or written again. The video's stem in every
    name keeps frames of several videos apart in one folder (``clip.mp4`` and ``clip.avi`` would share
    names: give them different folders).

    Args:
        video: the video file.
        out_dir: the folder for the frames (created).
        stride: every ``stride``-th frame.
        max_frames: at most this many frames; None: all.

    Returns:
        The frames' paths, in order (see :func:`frame_path`).

    Raises:
        ImportError: PyAV is missing. FileNotFoundError: no such file.
        ValueError: naming the file and the reason, when it is not a readable video; frames written
            before a decoding error stay.

    Example:
        >>> extract_frames("talk.mp4", "frames", stride=5)[:2]
        [PosixPath('frames/talk_f000000.png'), PosixPath('frames/talk_f000005.png')]
    """
    paths = []
    for index, _, av_frame in _decoded_frames(video, stride, max_frames):
        target = frame_path(video, out_dir, index)
        if not target.is_file():
            with atomic_write(target) as handle:
                Image.fromarray(_upright(av_frame)).save(handle, format="PNG")
        paths.append(target)
    return paths


def _check_frame(frame: np.ndarray, index: int, size: tuple[int, int] | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index}: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    if size is not None and frame.shape[:2] != size:
        raise ValueError(f"frame {index}: size {frame.shape[:2]} differs from the first frame's {size}")
    return np.ascontiguousarray(frame)


def _checked_frames(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The frames, each checked as it comes; at least one. Shape: N × (H, W, 3) uint8, one size."""
    size = None
    count = 0
    for count, frame in enumerate(frames, 1):
        frame = _check_frame(frame, count - 1, size)
        size = frame.shape[:2]
        yield frame
    if count == 0:
        raise ValueError("an animation needs at least one frame")


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row/column where a side is odd (yuv420p needs even sides). Shape: (H, W, 3) -> even."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def video_encoder(suffix: str) -> str:
    """The first encoder of :data:`ENCODERS` for ``suffix`` (``".mp4"``, ``".webm"``) that FFmpeg has.

    Raises:
        ImportError: PyAV is missing. RuntimeError: none of the encoders is built into FFmpeg.
    """
    av = _import_av()
    for name in ENCODERS[suffix]:
        try:
            av.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):  # an unknown codec raises UnknownCodecError (a ValueError)
            continue
        return name
    raise RuntimeError(f"no {suffix} encoder in this FFmpeg build (tried {', '.join(ENCODERS[suffix])})")


def _write_pillow_animation(handle, frames: Iterator[np.ndarray], fps: float, image_format: str) -> None:
    # a list: Pillow's APNG writer walks append_images twice
    pictures = [Image.fromarray(frame) for frame in frames]
    pictures[0].save(handle, format=image_format, save_all=True, append_images=pictures[1:],
               duration=int(round(1000.0 / fps)), loop=0)


def _write_video(handle, frames: Iterator[np.ndarray], fps: float, suffix: str) -> None:
    av = _import_av()
    encoder = video_encoder(suffix)
    padded = (_pad_to_even(frame) for frame in frames)
    first = next(padded)
    container = av.open(handle, mode="w", format=suffix[1:])
    try:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001),
                                      options=ENCODER_OPTIONS.get(encoder, {}))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in itertools.chain([first], padded):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    finally:
        container.close()


def write_animation(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10) -> Path:
    """Write frames as an animation, atomically; the format follows the file ending.

    ``.gif`` (256 colours per frame) and ``.png`` (APNG, lossless) go through Pillow, which merges
    identical consecutive frames into one longer frame; ``.mp4`` (H.264, else MPEG-4 part 2) and
    ``.webm`` (VP9, else VP8) through PyAV, odd sides padded to even by repeating the last row/column.

    Args:
        path: the output file.
        frames: the pictures, all the same size (any iterable: video frames are encoded as they come).
        fps: frames per second.

    Returns:
        ``path``.

    Raises:
        ValueError: an unknown ending (the message lists the choices), no frame, a frame that is not
            (H, W, 3) uint8 or not the first one's size, or ``fps <= 0``.
        ImportError: ``.mp4``/``.webm`` without PyAV (the message gives the install command).

    Shape:
        frames: N × (H, W, 3) uint8.

    Example:
        >>> write_animation("turn.gif", [np.full((64, 64, 3), 40 * k, np.uint8) for k in range(5)], fps=5)
        PosixPath('turn.gif')
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"{path}: unknown animation format {suffix or '(no ending)'!r}; "
                         f"choose one of {', '.join(ANIMATION_SUFFIXES)}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if suffix in ENCODERS:
        _import_av()  # fail before any file is touched
    checked = _checked_frames(frames)
    with atomic_write(path) as handle:
        if suffix in ENCODERS:
            _write_video(handle, checked, float(fps), suffix)
        else:
            _write_pillow_animation(handle, checked, float(fps), "GIF" if suffix == ".gif" else "PNG")
    return path
