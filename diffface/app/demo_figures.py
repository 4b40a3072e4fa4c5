"""The demo's figures of the held-out photos: a grid of each method's reconstruction over the photo, and
each method's 2D landmark RMS against the observed landmarks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from diffface.fitting.job.results import read_fit_results
from diffface.landmark_marching import project_landmarks
from diffface.landmarks import list_images
from diffface.landmarks.annotations import read_landmark_file
from diffface.morphable_model import MorphableModel
from diffface.networks.visualize import prediction_overlays
from diffface.renderers import FaceRenderer
from diffface.report_images import overlay_landmarks, save_panel_grid, to_uint8_image

from .demo_config import METHODS, DemoRun

GRID_PANEL_PX = 256  # larger photos are shrunk to this side in the report's grid


def step_figures(run: DemoRun) -> dict:
    """A grid row per held-out photo: the photo with observed (green) and fitted (red) landmarks, then
    each method's reconstruction rendered over it; and each method's 2D landmark RMS error."""
    params, observed, images = _heldout_parameters(run, list_images(run.path("inputs", "heldout", "images")))
    if not images:
        raise ValueError("no held-out photo was reconstructed by every method")
    projected = {method: project_landmarks_px(run.model, p) for method, p in params.items()}
    landmark_rms = {method: landmark_rms_px(fitted, observed) for method, fitted in projected.items()}
    shown = images[:run.config.preview_faces]
    # photos of any size and shape in one grid: each panel padded to a square of the largest side
    side = min(GRID_PANEL_PX, max((max(Image.open(p).size) for p in shown), default=1))
    panels = []
    for i, path in enumerate(shown):
        photo = np.array(Image.open(path).convert("RGB"))
        landmark_sets = [(observed[i], (80, 255, 80))]
        if "landmark fit" in projected:
            landmark_sets.append((projected["landmark fit"][i], (255, 60, 60)))
        row = [overlay_landmarks(photo, landmark_sets)]
        row += [Image.fromarray(_render_over(run.model, p.index(slice(i, i + 1)), photo)) for p in params.values()]
        panels += [ImageOps.pad(panel, (side, side)) if panel.size != (side, side) else panel for panel in row]
    grid = None
    if panels:
        run.path("figures").mkdir(parents=True, exist_ok=True)
        grid = save_panel_grid(panels, run.path("figures", "grid.png"), columns=1 + len(params))
    return {"grid": None if grid is None else "figures/grid.png", "grid_columns": ["photo + landmarks", *params],
            "photos": len(images), "landmark_rms_px": landmark_rms}


def _heldout_parameters(run: DemoRun, images: list[Path]):
    """Each method's parameters (photo frame) and the observed landmarks (N, 68, 2) of the held-out photos
    that every method reconstructed (a photo whose fit failed is left out), and those photos."""
    model = run.model
    rows = {}
    for method in ("landmark fit", "texture fit"):
        if run.path(METHODS[method]).is_dir():
            table = read_fit_results(run.path(METHODS[method]))
            rows[method] = (table, {Path(key).stem: row for row, key in enumerate(table["key"])})
    images = [p for p in images if run.path("predict", f"{p.stem}.npz").is_file()
              and all(p.stem in by_stem for _, by_stem in rows.values())]
    stems = [p.stem for p in images]
    params = {method: model.layout.unpack(torch.from_numpy(table["params"][[by_stem[s] for s in stems]]).float())
              for method, (table, by_stem) in rows.items()}
    params["network"] = model.layout.unpack(torch.from_numpy(np.stack(
        [np.load(run.path("predict", f"{s}.npz"))["params"] for s in stems])).float())
    observed = np.stack([read_landmark_file(run.path("landmarks", "heldout", f"{s}.pts"))[0] for s in stems])
    return {k: v.to(model.mean_shape.device) for k, v in params.items()}, observed, images


def landmark_rms_px(projected: np.ndarray, observed: np.ndarray) -> float:
    """RMS distance (pixels) of projected landmarks from the observed ones, over every finite landmark.
    Shape: (N, 68, 2), (N, 68, 2) -> scalar."""
    return float(np.sqrt(np.nanmean(((projected - observed) ** 2).sum(-1))))


def project_landmarks_px(model: MorphableModel, params) -> np.ndarray:
    """The 68 landmarks of unpacked parameters projected into their image. Shape: batch B -> (B, 68, 2)."""
    with torch.no_grad():
        landmarks, _ = project_landmarks(model, params, model.shape(params.alpha_id, params.alpha_exp))
    return landmarks.cpu().numpy()


def _render_over(model: MorphableModel, params, photo: np.ndarray) -> np.ndarray:
    """One face rendered over its photo: with its own albedo and light where fitted (stage 2), else
    blended in with the mean albedo under a frontal light. Shape: params batch 1; photo (H, W, 3) uint8."""
    image = torch.from_numpy(photo).to(model.mean_shape.device).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        if params.sh is not None and params.beta is not None:
            rendered = FaceRenderer(model, image.shape[-2:], backend="builtin")(params, image).images[0]
        else:
            rendered = prediction_overlays(model, replace(params, beta=None, sh=None), image)[0]
    return to_uint8_image(rendered)
