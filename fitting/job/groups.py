"""Subjects of a grouped fit job: which images show one person, in which order, and their identity files.

``group_by``:

* ``folder``: INPUT is a folder of subfolders, one per subject (a video's frames or one person's photos),
  images sorted by name; an image directly in INPUT is a subject of its own;
* ``csv``: a CSV file with the columns ``image,subject`` (image paths relative to the CSV's folder);
  subjects in order of first appearance, images in the file's order;
* ``video``: INPUT is a video file or a folder of videos; each video's frames are extracted once to
  ``DIR/frames/<video stem>/`` (resumable) and are one subject.

A subject's frames are ordered (a video) for ``folder`` and ``video``; the smoothness prior applies only
with ``sequence.smooth``. After a subject is fitted its per-frame results are written, then
``DIR/identities/<subject>.npz`` (shared identity, and albedo after stage 2): that file marks the subject as
done, so a job killed in the middle of a subject fits that subject again.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from diffface.atomic_io import atomic_write
from diffface.landmarks.images import list_images
from diffface.video_io import VIDEO_SUFFIXES, extract_frames, is_video

from .config import GROUP_BY
from .inputs import FitInput, _key_for
IDENTITIES_DIR = "identities"
FRAMES_DIR = "frames"
IDENTITY_FORMAT = "diffface-identity/1"


@dataclass(frozen=True)
class Subject:
    """One person: a name (file-safe, unique in the job), their images, and whether these are a sequence."""

    name: str
    items: tuple[FitInput, ...]
    ordered: bool


def _subject_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".")
    return cleaned or "subject"


def _unique(subjects: list[Subject]) -> list[Subject]:
    seen: dict[str, int] = {}
    out = []
    for subject in subjects:
        count = seen.get(subject.name, 0)
        seen[subject.name] = count + 1
        out.append(subject if count == 0 else Subject(f"{subject.name}_{count}", subject.items, subject.ordered))
    return out


def subjects_from_folder(source: Path) -> list[Subject]:
    """One subject per subfolder of ``source`` (its images sorted), one per image directly in it."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: --group-by folder needs a folder of subfolders, one per subject")
    subjects = [Subject(_subject_name(path.stem), (FitInput(path, _key_for(path, source)),), False)
                for path in list_images(source)]
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = list_images(folder)
        if images:
            subjects.append(Subject(_subject_name(folder.name),
                                    tuple(FitInput(p, _key_for(p, source)) for p in images), True))
    if not subjects:
        raise ValueError(f"{source}: no images in it or in its subfolders")
    return _unique(subjects)


def subjects_from_csv(table: Path) -> list[Subject]:
    """Subjects from a CSV of ``image,subject`` rows (paths relative to the CSV's folder)."""
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no such CSV file of image,subject rows")
    root = table.parent
    groups: dict[str, list[FitInput]] = {}
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"image", "subject"} <= set(reader.fieldnames):
            raise ValueError(f"{table}: needs a header with the columns image,subject (has {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            image, subject = (row.get("image") or "").strip(), (row.get("subject") or "").strip()
            if not image or not subject:
                raise ValueError(f"{table}, line {line}: an empty image or subject")
            path = root / image
            groups.setdefault(subject, []).append(FitInput(path, _key_for(path, root)))
    if not groups:
        raise ValueError(f"{table}: lists no image")
    return _unique([Subject(_subject_name(name), tuple(items), False) for name, items in groups.items()])


def subjects_from_videos(source: Path, frames_dir: Path, stride: int = 1) -> tuple[list[Subject], list[dict]]:
    """One subject per video (a file, or the videos of a folder): its frames extracted to ``frames_dir/<stem>/``.

    Returns the subjects and one failure record per video that could not be read (the rest go on).
    """
    if source.is_dir():
        videos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise ValueError(f"{source}: no videos ({', '.join(VIDEO_SUFFIXES)}) in this folder")
    elif source.is_file():
        if not is_video(source):
            raise ValueError(f"{source}: not a video ({', '.join(VIDEO_SUFFIXES)})")
        videos = [source]
    else:
        raise FileNotFoundError(f"{source}: no such video or folder")
    subjects, failures = [], []
    for video in videos:
        name = _subject_name(video.stem)
        try:
            frames = extract_frames(video, frames_dir / name, stride=stride)
        except (ValueError, OSError) as exc:
            failures.append({"image": str(video), "key": f"{FRAMES_DIR}/{name}", "status": "failed",
                             "reason": str(exc), "error": type(exc).__name__})
            continue
        if frames:
            subjects.append(Subject(name, tuple(FitInput(p, _key_for(p, frames_dir)) for p in frames), True))
    return _unique(subjects), failures


def list_subjects(source: str | Path, group_by: str, groups_csv: str | Path | None = None,
                  out_dir: str | Path | None = None, video_stride: int = 1) -> tuple[list[Subject], list[dict]]:
    """The subjects of a grouped job and the failure records of inputs that could not be listed."""
    source = Path(source)
    if group_by == "folder":
        return subjects_from_folder(source), []
    if group_by == "csv":
        return subjects_from_csv(Path(groups_csv) if groups_csv else source), []
    if group_by == "video":
        if out_dir is None:
            raise ValueError("--group-by video needs the output folder (frames are extracted there)")
        return subjects_from_videos(source, Path(out_dir) / FRAMES_DIR, video_stride)
    raise ValueError(f"group_by must be one of {GROUP_BY[1:]} for a grouped job, got {group_by!r}")


def identity_path(out_dir: str | Path, subject: str) -> Path:
    return Path(out_dir) / IDENTITIES_DIR / f"{subject}.npz"


def subject_failure_path(out_dir: str | Path, subject: str) -> Path:
    return Path(out_dir) / IDENTITIES_DIR / f"{subject}.failed.json"


def write_identity(path: Path, subject: Subject, keys: Sequence[str], alpha_id: np.ndarray, beta: np.ndarray | None,
                   segments: np.ndarray, model_name: str, model_fingerprint: str, energy: np.ndarray,
                   shared: bool = True) -> Path:
    """Write a subject's identity file (atomically).

    Arrays: ``format``; ``subject``; ``frames (N,)`` the result keys fitted; ``alpha_id (G, K_id)`` one identity
    per segment of frames (G = 1 unless the subject was longer than ``max_group_frames``); ``segments (G, 2)``
    first and last+1 frame of each; ``beta (G, K_tex)`` after stage 2; ``energy (G,)``; ``shared`` (False: the
    frames were fitted with their own identities, ``alpha_id``/``beta`` are their means); the model's name and
    fingerprint. Beside it, ``<subject>_frames.csv`` lists every frame's pose, camera and expression (:func:`frames_csv`).
    """
    arrays = {"format": np.array(IDENTITY_FORMAT), "subject": np.array(subject.name), "frames": np.array(list(keys)),
              "ordered": np.array(subject.ordered), "shared": np.array(shared), "alpha_id": alpha_id.astype(np.float32),
              "segments": segments.astype(np.int64), "energy": energy.astype(np.float64),
              "model_name": np.array(model_name), "model_fingerprint": np.array(model_fingerprint)}
    if beta is not None:
        arrays["beta"] = beta.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    return path


def frames_csv_path(out_dir: str | Path, subject: str) -> Path:
    return Path(out_dir) / IDENTITIES_DIR / f"{subject}_frames.csv"


def frames_csv(keys: Sequence[str], angles: np.ndarray, translation: np.ndarray, focal: np.ndarray,
               principal_point: np.ndarray, alpha_exp: np.ndarray, landmark_energy: np.ndarray) -> str:
    """A subject's per-frame parameters as CSV text: one row per frame, in order (angles in degrees, original frame).

    Shape: angles, translation (N, 3); focal (N, 1); principal_point (N, 2); alpha_exp (N, K); landmark_energy (N,).
    """
    header = (["frame", "key", "pitch_deg", "yaw_deg", "roll_deg", "tx_mm", "ty_mm", "tz_mm", "focal_px", "px", "py",
               "landmark_energy"] + [f"exp_{k:02d}" for k in range(alpha_exp.shape[1])])
    lines = [",".join(header)]
    degrees = np.degrees(angles)
    for i, key in enumerate(keys):
        values = [*degrees[i], *translation[i], focal[i, 0], *principal_point[i], landmark_energy[i], *alpha_exp[i]]
        lines.append(",".join([str(i), key.replace(",", "_")] + [f"{float(v):.6g}" for v in values]))
    return "\n".join(lines) + "\n"


def read_identity(path: str | Path) -> dict:
    """A subject's identity file as a dict (strings as ``str``). Raises ValueError naming a damaged file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable identity file ({exc})") from exc
    if str(out.get("format")) != IDENTITY_FORMAT:
        raise ValueError(f"{path}: not a diffface identity file (format {out.get('format')!r})")
    for key in ("format", "subject", "model_name", "model_fingerprint"):
        out[key] = str(out[key])
    return out
