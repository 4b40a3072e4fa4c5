"""Landmark a folder of photos: ``.pts`` (and ``.json``) per face, optional overlays, a record of every image.

Each image's outputs are written atomically as soon as it is done, and one line per image is
appended to ``landmarks_log.jsonl``, so a killed job loses at most the image in flight; a re-run
skips images whose ``.pts`` exists (unless ``overwrite``). Bad images (unreadable, no face, no
annotation) are recorded with the reason and skipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import ImageDraw

from diffface.atomic_io import atomic_write, write_text_atomic
from diffface.landmark_io import write_pts
from diffface.report_images import overlay_landmarks

from .annotations import write_landmarks_json
from .detection import FaceDetection, LandmarkDetector, NoFaceError, select_faces
from .images import ImageReadError, read_image
from .limits import InputLimits, check_image_size

LOG_NAME = "landmarks_log.jsonl"
REPORT_NAME = "landmarks_report.json"


@dataclass
class LandmarkJobConfig:
    """Options of :func:`landmark_images`.

    Attributes:
        all_faces: keep every face (``stem.pts``, ``stem_face1.pts``, ... largest first), not just the largest.
        overlay: also write ``overlays/stem.png`` with the landmarks and boxes drawn.
        overwrite: redo images whose ``.pts`` exists.
        limits: images larger than ``limits.max_image_pixels`` or with a side under ``limits.min_image_side``
            are recorded as failed (the landmark checks of :class:`InputLimits` are the fit's).
    """

    all_faces: bool = False
    overlay: bool = False
    overwrite: bool = False
    limits: InputLimits = field(default_factory=InputLimits)


def face_output_stem(image_path: Path, index: int) -> str:
    """``stem`` for the largest face, ``stem_face{index}`` for the others."""
    return image_path.stem if index == 0 else f"{image_path.stem}_face{index}"


def draw_overlay(image: np.ndarray, detections: Sequence[FaceDetection], path: Path) -> Path:
    """Write the image with each face's landmarks (green) and box (yellow)."""
    radius = max(1.5, max(image.shape[:2]) / 300)
    picture = overlay_landmarks(image, [(d.landmarks, (0, 255, 0)) for d in detections], radius=radius)
    draw = ImageDraw.Draw(picture)
    for d in detections:
        draw.rectangle([float(v) for v in d.box], outline=(255, 220, 0), width=max(1, int(radius)))
    with atomic_write(path) as handle:
        picture.save(handle, format="PNG")
    return path


def _process(image_path: Path, detector: LandmarkDetector, out_dir: Path, config: LandmarkJobConfig) -> dict:
    image = read_image(image_path, config.limits.max_image_pixels)
    check_image_size(image.shape[:2], image_path, config.limits)
    detections = select_faces(detector.detect(image, image_path), config.all_faces)
    if not detections:
        raise NoFaceError(f"{image_path}: no face found by the {detector.name} detector")
    outputs = []
    for index, face in enumerate(detections):
        stem = face_output_stem(image_path, index)
        outputs.append(str(write_pts(out_dir / f"{stem}.pts", face.landmarks).name))
    write_landmarks_json(out_dir / f"{image_path.stem}.json", detections, image=image_path.name)
    if config.overlay:
        (out_dir / "overlays").mkdir(exist_ok=True)
        draw_overlay(image, detections, out_dir / "overlays" / f"{image_path.stem}.png")
    return {"faces": len(detections), "outputs": outputs, "boxes": [d.box.round(1).tolist() for d in detections]}


def landmark_images(image_paths: Sequence[str | Path], detector: LandmarkDetector, out_dir: str | Path,
                    config: LandmarkJobConfig = LandmarkJobConfig(),
                    progress: Callable[[], None] | None = None, left_out: dict[str, int] | None = None) -> dict:
    """Landmark images one by one, recording each outcome.

    Args:
        left_out: ``{suffix: count}`` of the files of the scanned folder that are not images
            (:attr:`ImageScan.left_out`), recorded in the report.

    Returns:
        The report (also written to ``out_dir/landmarks_report.json``): counts, images per second,
        ``left_out`` and, per image, ``status`` (``ok``, ``skipped`` (done before) or ``failed``) with the reason.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, start = [], time.perf_counter()
    with open(out_dir / LOG_NAME, "a", encoding="utf-8") as log:
        for image_path in map(Path, image_paths):
            record = {"image": str(image_path)}
            if not config.overwrite and (out_dir / f"{image_path.stem}.pts").is_file():
                record["status"] = "skipped"
                record["reason"] = "already done (its .pts exists; use --overwrite to redo)"
            else:
                try:
                    record.update(status="ok", **_process(image_path, detector, out_dir, config))
                except (ImageReadError, NoFaceError, FileNotFoundError, ValueError) as exc:
                    record.update(status="failed", reason=str(exc), error=type(exc).__name__)
                log.write(json.dumps(record) + "\n")
                log.flush()
            records.append(record)
            if progress is not None:
                progress()
    seconds = time.perf_counter() - start
    counts = {status: sum(r["status"] == status for r in records) for status in ("ok", "skipped", "failed")}
    report = {"detector": detector.name, "images": len(records), **counts,
              "faces": sum(r.get("faces", 0) for r in records),
              "images_per_s": round(counts["ok"] / seconds, 3) if seconds > 0 and counts["ok"] else None,
              "left_out": dict(left_out or {}),
              "failures": [{"image": r["image"], "reason": r["reason"]} for r in records if r["status"] == "failed"],
              "records": records}
    write_text_atomic(out_dir / REPORT_NAME, json.dumps(report, indent=1))
    return report
