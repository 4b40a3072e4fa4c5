"""The loop of a grouped fit job: one subject (a video, a person's photos) at a time, its frames fitted together.

A DataLoader worker reads a whole subject in order, tracking the face from frame to frame; bad frames are
recorded and skipped; the good ones are fitted in one batch (``max_group_frames`` at most: longer subjects
in consecutive segments) with a shared identity (and albedo) and, with ``sequence.smooth``, smooth motion.
Per-frame results are written as in an ungrouped job, then the subject's identity file, which marks it done.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from diffface.atomic_io import write_text_atomic
from diffface.morphable_model import MorphableModel

from ..frame_groups import FrameGroups
from .batch import BatchFit, fit_batch
from .config import FitJobConfig
from .groups import Subject, frames_csv, frames_csv_path, identity_path, subject_failure_path, write_identity
from .inputs import FitItem, SubjectImageDataset, make_loader
from .results import record_failure, write_fitted


def subject_done(out_dir: Path, subject: Subject, retry_failed: bool) -> bool:
    """Fitted (its identity file exists), or recorded as failed (unless ``retry_failed``)."""
    return identity_path(out_dir, subject.name).is_file() or (
        not retry_failed and subject_failure_path(out_dir, subject.name).is_file())


def _fit_segment(model: MorphableModel, subject: Subject, items: list[FitItem], config: FitJobConfig,
                 device: torch.device) -> BatchFit:
    groups = FrameGroups(torch.zeros(len(items), dtype=torch.long), torch.tensor([subject.ordered]))
    return fit_batch(model, items, config, device, groups)


def fit_subject(model: MorphableModel, subject: Subject, frames: list[FitItem], config: FitJobConfig,
                device: torch.device, out_dir: Path, rank: int, log,
                counts: dict) -> list[tuple[BatchFit, list]] | None:
    """Fit one subject's frames and write their results and the identity file; returns every fitted segment's
    (fit, items), in order (TensorBoard shows the last, the overlay animation all), or None when no frame could be
    fitted."""
    for item in frames:
        if item.status != "ok":
            record_failure(out_dir, item, rank, log)
            counts["failed"] += 1
    good = [item for item in frames if item.status == "ok"]
    if len(good) == 1:
        log.write({"subject": subject.name, "status": "note", "rank": rank,
                   "reason": f"subject {subject.name}: one usable image of {len(frames)}; its identity rests on it alone"})
    identities, betas, energies, segments, keys, fitted, rows = [], [], [], [], [], [], []
    size = config.max_group_frames
    for start in range(0, len(good), size):
        segment = good[start:start + size]
        try:
            fit = _fit_segment(model, subject, segment, config, device)
        except (ValueError, RuntimeError) as exc:
            for item in segment:
                record_failure(out_dir, item.failed(f"{item.image}: fitting subject {subject.name} failed: {exc}",
                                                    type(exc).__name__), rank, log)
                counts["failed"] += 1
            continue
        write_fitted(model, fit, segment, config, out_dir, rank, log)
        counts["fitted"] += len(segment)
        # one identity per segment (the frames' mean when the identity is not shared: a summary only)
        summary = (lambda t: t[0]) if config.sequence.share_identity else (lambda t: t.mean(0))  # noqa: E731
        identities.append(summary(fit.params.alpha_id).cpu().numpy())
        if fit.params.beta is not None:
            betas.append(summary(fit.params.beta).cpu().numpy())
        p = fit.params
        rows.append([t.detach().cpu().double().numpy() for t in (p.angles, p.translation, p.focal, p.principal_point,
                                                                  p.alpha_exp, fit.energies["landmarks/landmarks"])])
        energies.append(float(fit.energies["landmarks/total"].sum()))
        segments.append((start, start + len(segment)))
        keys.extend(item.key for item in segment)
        fitted.append((fit, segment))
    if not identities:
        record = {"subject": subject.name, "status": "failed", "rank": rank, "frames": len(frames),
                  "reason": f"subject {subject.name}: none of its {len(frames)} images could be fitted"}
        write_text_atomic(subject_failure_path(out_dir, subject.name), json.dumps(record))
        log.write(record)
        return None
    columns = [np.concatenate([row[k] for row in rows]) for k in range(6)]
    write_text_atomic(frames_csv_path(out_dir, subject.name), frames_csv(keys, *columns))
    write_identity(identity_path(out_dir, subject.name), subject, keys, np.stack(identities),
                   np.stack(betas) if betas else None, np.array(segments), model.name, model.fingerprint,
                   np.array(energies), shared=config.sequence.share_identity)
    subject_failure_path(out_dir, subject.name).unlink(missing_ok=True)
    return fitted


def run_subjects(model: MorphableModel, subjects: list[Subject], config: FitJobConfig, device: torch.device,
                 out_dir: Path, rank: int, log, counts: dict, on_subject) -> None:
    """Fit the subjects not done yet, one at a time; ``on_subject(subject, frames, fitted)`` after each."""
    todo = [s for s in subjects if not subject_done(out_dir, s, config.retry_failed)]
    for subject in subjects:
        if subject not in todo:
            on_subject(subject, len(subject.items), None, done_before=True)
    dataset = SubjectImageDataset([s.items for s in todo], config.detector, config.detector_options,
                                  config.image_size, config.crop_scale, "texture" in config.stages,
                                  limits=config.limits)
    for subject, batch in zip(todo, make_loader(dataset, config, batch_size=1)):
        fitted = fit_subject(model, subject, batch[0], config, device, out_dir, rank, log, counts)
        on_subject(subject, len(batch[0]), fitted, done_before=False)
