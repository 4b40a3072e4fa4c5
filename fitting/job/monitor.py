"""Watching a job: the per-rank jsonl log, the progress bar and TensorBoard (energies, images/s, overlays)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffface.landmarks import crop_faces, read_image
from diffface.morphable_model import MorphableModel

from .batch import BatchFit, fitted_landmarks
from .config import FitJobConfig
from .inputs import FitItem
from diffface.lighting import default_lighting
from diffface.renderers import FaceRenderer
from diffface.report_images import overlay_landmarks, to_uint8_image


class RunLog:
    """Append-only jsonl log; a line cut short by a kill is closed before anything is appended."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                needs_newline = existing.read(1) != b"\n"
        self.handle = open(path, "a", encoding="utf-8")
        if needs_newline:
            self.handle.write("\n")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record, default=str) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def progress_bar(total: int, done: int, stages: Sequence[str], enabled: bool):
    """A tqdm bar over a rank's shard, starting at the images done by an earlier run."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="img", desc=f"fit ({'+'.join(stages)})", disable=not enabled,
                dynamic_ncols=True)


class TensorBoardMonitor:
    """Scalars per batch and an overlay grid now and then (rank 0 only)."""

    def __init__(self, out_dir: Path, model: MorphableModel, config: FitJobConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        self.model, self.config, self.renderer = model, config, None

    def scalars(self, fit: BatchFit, images_per_s: float, step: int) -> None:
        for name, values in fit.energies.items():
            finite = values[values.isfinite()]
            if finite.numel():
                self.writer.add_scalar(f"energy/{name}", float(finite.mean()), step)
        self.writer.add_scalar("throughput/images_per_s", images_per_s, step)

    def subject_scalars(self, subject: str, fit: BatchFit, step: int) -> None:
        """A subject's mean energies per term and the jitter of its fitted landmarks (mean |second difference|,
        pixels; frames in order)."""
        for name, values in fit.energies.items():
            finite = values[values.isfinite()]
            if finite.numel():
                self.writer.add_scalar(f"subjects/{subject}/{name}", float(finite.mean()), step)
        if fit.landmarks.shape[0] >= 3:
            second = fit.landmarks[2:] - 2 * fit.landmarks[1:-1] + fit.landmarks[:-2]
            self.writer.add_scalar(f"subjects/{subject}/landmark_jitter_px", float(second.norm(dim=-1).mean()), step)

    def overlay(self, items: list[FitItem], fit: BatchFit, step: int) -> None:
        """Rows of (crop with observed landmarks green and fitted red, the fit rendered over the crop)."""
        n = min(self.config.overlay_samples, len(items))
        if n == 0:
            return
        size = self.config.image_size
        crops = []
        for it in items[:n]:
            if it.crop is not None:
                crops.append(it.crop)
            else:  # a stage-1 job's workers make no crops: rebuild this one from the photo
                image = read_image(it.image, self.config.limits.max_image_pixels)
                pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
                # the crop box whose transform is the stored matrix: side = size / s, corner = -(t + 0.5) / s
                m = torch.from_numpy(it.crop_matrix).float()
                side = size / m[0, 0]
                x0, y0 = -(m[0, 2] + 0.5) / m[0, 0], -(m[1, 2] + 0.5) / m[0, 0]
                crops.append(crop_faces(pixels, torch.stack([x0, y0, x0 + side, y0 + side])[None], size)[0][0])
        device = self.model.mean_shape.device
        crops = torch.stack(crops).to(device)
        params = fit.crop_params.index(slice(0, n))
        if params.beta is None:
            params = replace(params, beta=torch.zeros(n, self.model.tex_dims, device=device))
        if params.sh is None:
            params = replace(params, sh=default_lighting(n, device=device))
        if self.renderer is None:
            self.renderer = FaceRenderer(self.model, size, backend="builtin").to(device)
        with torch.no_grad():
            rendered = self.renderer(params, crops).images.clamp(0, 1)
            fitted_crop = fitted_landmarks(self.model, params)
        rows = []
        for b in range(n):
            left = overlay_landmarks(to_uint8_image(crops[b]), [
                (fit.landmarks_crop[b].cpu().numpy(), (80, 255, 80)), (fitted_crop[b].cpu().numpy(), (255, 60, 60))])
            rows.append(np.concatenate([np.asarray(left), to_uint8_image(rendered[b])], 1))
        self.writer.add_image("overlay/observed_green_fitted_red__render", np.concatenate(rows, 0), step,
                              dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
