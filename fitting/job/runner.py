"""The job loop: :func:`run_fit_job` with resume, sharding over ranks and failure records.

Resume and crashes: a result file is written to a temporary name and renamed, so a result either
exists whole or not at all; a job killed (even by SIGKILL) loses at most the batch in flight. A re-run
skips images with a result (or a ``.failed.json``, unless ``retry_failed``) and removes stale
temporary files. A result file that cannot be read (damaged on disk, or not a result) is named in the
log and fitted again. DataLoader workers die with the job, even when it is killed with SIGKILL
(:mod:`diffface.workers`).

Sharding: with ``WORLD_SIZE > 1`` (``torchrun --nproc_per_node=N diffface fit ...``) rank ``r`` takes
the images ``i`` with ``i % WORLD_SIZE == r`` of the listed input, writes its own log and its own
result files (distinct names) into the shared ``results/``; ``torch.distributed`` (gloo, which
carries only the end barrier and the run statistics) is started only then. On several machines
without a shared disk, copy the ``results/`` folders together: file names never collide.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml

from diffface.morphable_model import load_morphable_model

from diffface.atomic_io import TEMPORARY_GLOB, write_text_atomic
from diffface.config_io import load_yaml
from .batch import fit_batch
from .config import FIT_SETTINGS, FitJobConfig, fit_settings
from .distributed import barrier, gather, init_distributed, world_from_env
from .grouped import run_subjects
from .groups import Subject, list_subjects
from .inputs import FitImageDataset, FitInput, FitItem, left_out_files, list_fit_inputs, make_loader
from .overlays import write_overlay_animation
from .monitor import RunLog, TensorBoardMonitor, progress_bar
from .results import (CONFIG_NAME, RESULTS_DIR, failure_path, read_fit_result, record_failure, result_path,
                      write_fitted, write_summary)


def _check_compatible(out_dir: Path, config: FitJobConfig) -> None:
    path = out_dir / CONFIG_NAME
    if not path.is_file():
        return
    try:
        previous = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return
    try:  # settings added since (absent from the file) count at their defaults, which keep the old behaviour
        old = fit_settings(FitJobConfig.from_dict(previous).to_dict())
    except ValueError:  # a file of another version or hand-edited: compare it as written
        old = fit_settings(previous)
    new = fit_settings(config.to_dict())
    if not (out_dir / RESULTS_DIR).is_dir() or old == new:
        return
    differ = [k for k in FIT_SETTINGS if old.get(k) != new.get(k)]
    raise ValueError(f"{out_dir} holds results fitted with other settings ({', '.join(differ)} differ from "
                     f"{path}); use a new --out, or delete {out_dir / RESULTS_DIR} to redo them")


def _is_done(out_dir: Path, key: str, retry_failed: bool) -> bool:
    return result_path(out_dir, key).is_file() or (not retry_failed and failure_path(out_dir, key).is_file())


def _remove_unreadable_result(out_dir: Path, item: FitInput) -> dict | None:
    """Delete a result file of ``item`` that cannot be read, so that the image is fitted again; returns the
    log record naming the file and the problem, or None when the result is fine or absent."""
    path = result_path(out_dir, item.key)
    if not path.is_file():
        return None
    try:
        read_fit_result(path)
        return None
    except ValueError as exc:
        path.unlink(missing_ok=True)
        return {"image": str(item.path), "key": item.key, "status": "refit",
                "reason": f"{exc}; fitting it again"}


def _remove_stale_temporaries(out_dir: Path) -> None:
    # every file of a job is written through diffface.atomic_io, whose temporaries match TEMPORARY_GLOB
    for folder in (out_dir / RESULTS_DIR, out_dir / "meshes"):
        if folder.is_dir():
            for tmp in folder.rglob(TEMPORARY_GLOB):
                tmp.unlink(missing_ok=True)


def run_fit_job(source: str | Path | Sequence[FitInput], out_dir: str | Path, config: FitJobConfig = FitJobConfig(),
                on_batch: Callable[[int], None] | None = None) -> dict:
    """Fit every image of ``source`` (a folder, a list file, or :class:`FitInput` items), writing results as they finish.

    Args:
        source: folder of images, text file listing them, or the items themselves.
        out_dir: output folder (layout: :mod:`diffface.fitting.job.results`).
        config: the job's settings; saved as ``out_dir/config.yaml``.
        on_batch: optional callable receiving the number of images each batch finished.

    Returns:
        This rank's run figures (``images`` listed, ``shard``, ``skipped`` (done before), ``fitted``,
        ``failed``, ``seconds``, ``images_per_s``, ``rank``, ``world_size``) and, on rank 0, ``summary``
        (as written to ``summary.json``).

    Raises:
        ValueError / FileNotFoundError: bad input or configuration, or ``out_dir`` holds results of other settings.
    """
    out_dir = Path(out_dir)
    subjects, listing_failures = None, []
    if config.group_by != "none":
        if not isinstance(source, (str, Path)):
            raise ValueError("a grouped job (group_by) lists its subjects from a folder, CSV or video path")
        subjects, listing_failures = list_subjects(source, config.group_by, config.groups_csv or None, out_dir,
                                                   config.video_stride)
        items = [item for subject in subjects for item in subject.items]
    else:
        items = list(source) if not isinstance(source, (str, Path)) else list_fit_inputs(source)
    left_out = left_out_files(source) if isinstance(source, (str, Path)) and Path(source).is_dir() else {}
    rank, world, local_rank = world_from_env()
    started_dist = init_distributed(world)
    try:
        return _run(items, out_dir, config, rank, world, local_rank, on_batch, left_out, subjects, listing_failures)
    finally:
        if started_dist:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(items: list[FitInput], out_dir: Path, config: FitJobConfig, rank: int, world: int, local_rank: int,
         on_batch, left_out: dict[str, int], subjects: list[Subject] | None = None,
         listing_failures: list[dict] = ()) -> dict:
    _check_compatible(out_dir, config)
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", local_rank)
    model = load_morphable_model(config.model).to(device)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out_dir)
        config.to_yaml(out_dir / CONFIG_NAME)
    barrier(world)  # nobody writes before stale temporaries are gone

    if subjects is not None:
        return _run_grouped(model, subjects, out_dir, config, device, rank, world, on_batch, left_out,
                            listing_failures, len(items))
    shard = [(i, item) for i, item in enumerate(items) if i % world == rank]
    refits = [record for _, item in shard if (record := _remove_unreadable_result(out_dir, item)) is not None]
    todo = [(i, item) for i, item in shard if not _is_done(out_dir, item.key, config.retry_failed)]
    dataset = FitImageDataset([item for _, item in todo], config.detector, config.detector_options,
                              config.image_size, config.crop_scale, "texture" in config.stages,
                              indices=[i for i, _ in todo], limits=config.limits)
    loader = make_loader(dataset, config, config.batch_size)
    log = RunLog(out_dir / f"log_rank{rank}.jsonl")
    for record in refits:
        log.write({**record, "rank": rank})
    board = TensorBoardMonitor(out_dir, model, config) if (config.tensorboard and rank == 0) else None
    counts = {"fitted": 0, "failed": 0}
    start = time.perf_counter()
    bar = progress_bar(len(shard), len(shard) - len(todo), config.stages, enabled=config.progress and rank == 0)
    try:
        for batch_index, batch in enumerate(loader):
            good = [it for it in batch if it.status == "ok"]
            for it in batch:
                if it.status != "ok":
                    record_failure(out_dir, it, rank, log)
                    counts["failed"] += 1
            fitted = _fit_and_write(model, good, config, device, out_dir, rank, log, counts)
            elapsed = time.perf_counter() - start
            rate = counts["fitted"] / elapsed if elapsed > 0 else 0.0
            if board is not None and fitted is not None:
                step = bar.n + len(batch)
                board.scalars(fitted[0], rate, step)
                if batch_index % config.overlay_every == 0:
                    board.overlay(fitted[1], fitted[0], step)
            bar.update(len(batch))
            bar.set_postfix(images_per_s=f"{rate:.1f}", failed=counts["failed"])
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        bar.close()
        log.close()
        if board is not None:
            board.close()
    figures = _figures(len(items), len(shard), len(shard) - len(todo), counts, start, rank, world, refits)
    return _finish(figures, out_dir, len(items), rank, world, left_out)


def _figures(listed: int, shard: int, skipped: int, counts: dict, start: float, rank: int, world: int,
             refits: list[dict]) -> dict:
    seconds = time.perf_counter() - start
    return {"images": listed, "shard": shard, "skipped": skipped, **counts, "seconds": round(seconds, 3),
            "images_per_s": round(counts["fitted"] / seconds, 3) if seconds > 0 and counts["fitted"] else None,
            "rank": rank, "world_size": world, "refit": [{"key": r["key"], "reason": r["reason"]} for r in refits]}


def _finish(figures: dict, out_dir: Path, listed: int, rank: int, world: int, left_out: dict) -> dict:
    every_rank = gather(figures, world)
    barrier(world)  # every rank's results are on disk before the summary is made
    if rank == 0:
        figures["summary"] = write_summary(out_dir, listed, every_rank, left_out=left_out)
    return figures


def _run_grouped(model, subjects: list[Subject], out_dir: Path, config: FitJobConfig, device, rank: int, world: int,
                 on_batch, left_out: dict, listing_failures: list[dict], listed: int) -> dict:
    """The grouped job: subject ``i`` on rank ``i % world``; each fitted whole (:mod:`.grouped`)."""
    shard = [s for i, s in enumerate(subjects) if i % world == rank]
    log = RunLog(out_dir / f"log_rank{rank}.jsonl")
    if rank == 0:
        for record in listing_failures:  # an unreadable video: recorded, the others go on
            write_text_atomic(failure_path(out_dir, record["key"]), json.dumps({**record, "rank": rank}))
            log.write({**record, "rank": rank})
    board = TensorBoardMonitor(out_dir, model, config) if (config.tensorboard and rank == 0) else None
    counts = {"fitted": 0, "failed": len(listing_failures) if rank == 0 else 0, "subjects": 0}
    frames = sum(len(s.items) for s in shard)
    start, skipped = time.perf_counter(), [0]
    bar = progress_bar(frames, 0, config.stages, enabled=config.progress and rank == 0)

    def on_subject(subject: Subject, count: int, fitted, done_before: bool) -> None:
        if done_before:
            skipped[0] += count
        else:
            counts["subjects"] += 1
        elapsed = time.perf_counter() - start
        rate = counts["fitted"] / elapsed if elapsed > 0 else 0.0
        if board is not None and fitted is not None:
            last_fit, last_items = fitted[-1]
            board.scalars(last_fit, rate, bar.n + count)
            board.subject_scalars(subject.name, last_fit, counts["subjects"])
            board.overlay(last_items, last_fit, bar.n + count)
        if config.save_overlays != "none" and fitted is not None:
            write_overlay_animation(model, fitted, out_dir, subject.name, config.save_overlays)
        bar.update(count)
        bar.set_postfix(images_per_s=f"{rate:.1f}", failed=counts["failed"])
        if on_batch is not None and not done_before:
            on_batch(count)

    try:
        run_subjects(model, shard, config, device, out_dir, rank, log, counts, on_subject)
    finally:
        bar.close()
        log.close()
        if board is not None:
            board.close()
    figures = _figures(listed, frames, skipped[0], counts, start, rank, world, [])
    return _finish(figures, out_dir, listed, rank, world, left_out)


def _fit_and_write(model, good: list[FitItem], config: FitJobConfig, device, out_dir: Path, rank: int, log: RunLog,
                   counts: dict):
    """Fit ``good`` as one batch (one by one if the batch fails) and write each result; returns the
    (fit, items) of the largest batch that succeeded, for TensorBoard."""
    if not good:
        return None
    try:
        fit = fit_batch(model, good, config, device)
    except (ValueError, RuntimeError) as exc:
        if len(good) == 1:
            failure = good[0].failed(f"{good[0].image}: fitting failed: {exc}", type(exc).__name__)
            record_failure(out_dir, failure, rank, log)
            counts["failed"] += 1
            return None
        # one bad sample must not cost the batch: fit each alone
        results = [_fit_and_write(model, [it], config, device, out_dir, rank, log, counts) for it in good]
        return next((r for r in results if r is not None), None)
    write_fitted(model, fit, good, config, out_dir, rank, log)
    counts["fitted"] += len(good)
    return fit, good
