"""Random scenes from a morphable model: face parameters, camera, lighting, and their landmarks.

This is the ground-truth generator used by the demo, the tests and the synthetic benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffface.camera import euler_to_rotation, model_to_camera_flip
from diffface.lighting import ambient_sh_coefficients
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters


@dataclass
class SceneConfig:
    """How random synthetic scenes are drawn.

    Attributes:
        image_size: square image side in pixels.
        focal_px: focal length in pixels.
        distance_mm: mean camera-to-face distance.
        yaw_deg / pitch_deg / roll_deg: angles are drawn uniformly in ±these.
        id_scale / exp_scale / tex_scale: σ multipliers for the model's priors.
        landmark_noise_px: σ of the Gaussian noise added to each 2D landmark.
        landmark_offset_px, landmark_scale, contour_slide_px: a detector's structured error on top
            (:func:`detector_like_landmarks`): σ of one shift per face (pixels), of one relative scale per face
            about the landmarks' centroid (0.03: 3 %), and of each jaw-contour point's slide along the jaw
            (pixels). All 0 by default.
        seed: random seed (the scene set is a pure function of the config and model).
    """

    image_size: int = 224
    focal_px: float = 1000.0
    distance_mm: float = 1100.0
    yaw_deg: float = 45.0
    pitch_deg: float = 15.0
    roll_deg: float = 10.0
    id_scale: float = 1.0
    exp_scale: float = 0.7
    tex_scale: float = 1.0
    landmark_noise_px: float = 2.0
    landmark_offset_px: float = 0.0
    landmark_scale: float = 0.0
    contour_slide_px: float = 0.0
    seed: int = 0


def sample_scenes(model: MorphableModel, batch: int, config: SceneConfig = SceneConfig()) -> FaceParameters:
    """Draw ``batch`` random faces, poses, cameras and SH lights (all groups filled).

    Shape:
        -> FaceParameters with alpha_id (B, K_id), ..., beta (B, K_tex), sh (B, 27).
    """
    g = torch.Generator().manual_seed(config.seed)
    alpha_id, _, beta = model.sample_coefficients(batch, config.id_scale, generator=g)
    _, alpha_exp, _ = model.sample_coefficients(batch, config.exp_scale, generator=g)
    beta = beta * config.tex_scale

    def uniform(limit_deg: float) -> torch.Tensor:
        return (torch.rand(batch, generator=g) * 2 - 1) * math.radians(limit_deg)

    angles = torch.stack([uniform(config.pitch_deg), uniform(config.yaw_deg), uniform(config.roll_deg)], -1)
    half = config.image_size / 2
    translation = torch.stack([
        torch.randn(batch, generator=g) * 10,
        torch.randn(batch, generator=g) * 10,
        config.distance_mm * (1 + 0.05 * torch.randn(batch, generator=g)),
    ], -1)
    sh = torch.cat([
        ambient_sh_coefficients(1, ambient=float(0.6 + 0.4 * torch.rand(1, generator=g)),
                                direction=tuple((torch.randn(3, generator=g) * torch.tensor([1.0, 1.0, 0.3])
                                                 + torch.tensor([0, 0, 1.0])).tolist()),
                                directional=float(0.5 * torch.rand(1, generator=g)))
        for _ in range(batch)
    ])
    # place the model's centroid (not its origin) at the drawn offset, whatever the model's origin
    translation = translation - rotated_centroid(model, angles)
    device = model.mean_shape.device
    return FaceParameters(
        alpha_id=alpha_id, alpha_exp=alpha_exp, translation=translation, angles=angles,
        focal=torch.full((batch, 1), config.focal_px), principal_point=torch.full((batch, 2), half),
        beta=beta, sh=sh,
    ).to(device)


def rotated_centroid(model: MorphableModel, angles: torch.Tensor) -> torch.Tensor:
    """The model's mean-shape centroid rotated by ``angles`` into camera axes: a translation minus this puts the
    centroid (not the model's origin) at that translation.

    Shape:
        angles: (B, 3) radians, on the CPU -> (B, 3) mm.
    """
    centroid = model.mean_shape.mean(0).cpu()
    return (euler_to_rotation(angles) @ centroid) * model_to_camera_flip(centroid)


def noisy_landmarks(landmarks_2d: torch.Tensor, noise_px: float, seed: int = 0) -> torch.Tensor:
    """Add isotropic Gaussian noise of σ ``noise_px``. Shape: (B, 68, 2) -> (B, 68, 2)."""
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(landmarks_2d.shape, generator=g, dtype=landmarks_2d.dtype) * noise_px
    return landmarks_2d + noise.to(landmarks_2d.device)


JAW_CONTOUR = slice(0, 17)  # iBUG 68: the jaw line, ear to ear
OUTER_EYE_CORNERS = (36, 45)  # the inter-ocular distance of the 300W normalised error


def detector_like_landmarks(landmarks_2d: torch.Tensor, config: SceneConfig, seed: int = 0) -> torch.Tensor:
    """Observed landmarks as a detector returns them: the per-point noise of :func:`noisy_landmarks` (the
    same draw), then one scale about the centroid and one shift per face, and the jaw-contour points slid
    along the jaw (a detector places them anywhere on the face's outline). With the structured terms at 0
    this is :func:`noisy_landmarks` exactly.

    Shape:
        landmarks_2d: (B, 68, 2) true projections -> (B, 68, 2).
    """
    observed = noisy_landmarks(landmarks_2d, config.landmark_noise_px, seed)
    if not (config.landmark_offset_px or config.landmark_scale or config.contour_slide_px):
        return observed
    g = torch.Generator().manual_seed(seed + 3)  # its own stream: the per-point noise stays the same draw
    batch, dtype = landmarks_2d.shape[0], landmarks_2d.dtype
    scale = 1 + torch.randn(batch, 1, 1, generator=g, dtype=dtype) * config.landmark_scale
    offset = torch.randn(batch, 1, 2, generator=g, dtype=dtype) * config.landmark_offset_px
    slide = torch.randn(batch, 17, 1, generator=g, dtype=dtype) * config.contour_slide_px
    jaw = landmarks_2d[:, JAW_CONTOUR].cpu()
    tangent = torch.cat([jaw[:, 1:2] - jaw[:, :1], jaw[:, 2:] - jaw[:, :-2], jaw[:, -1:] - jaw[:, -2:-1]], 1)
    tangent = tangent / tangent.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    device = landmarks_2d.device
    centroid = landmarks_2d.mean(1, keepdim=True)
    observed = centroid + (observed - centroid) * scale.to(device) + offset.to(device)
    return torch.cat([observed[:, JAW_CONTOUR] + (slide * tangent).to(device), observed[:, 17:]], 1)


def interocular_error(observed: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean landmark error per face in units of the inter-ocular (outer eye corner) distance: 300W's
    normalised mean error. Shape: (B, 68, 2), (B, 68, 2) -> (B,)."""
    interocular = (truth[:, OUTER_EYE_CORNERS[0]] - truth[:, OUTER_EYE_CORNERS[1]]).norm(dim=-1)
    return (observed - truth).norm(dim=-1).nanmean(-1) / interocular


def random_backgrounds(batch: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random backgrounds: a colour gradient plus low-frequency blotches, values in [0, 1].

    Shape:
        -> (B, 3, H, W).
    """
    g = torch.Generator().manual_seed(seed + 2)
    ramp = torch.linspace(0, 1, image_size)
    rows, cols = torch.meshgrid(ramp, ramp, indexing="ij")
    start, end = torch.rand(batch, 3, 1, 1, generator=g), torch.rand(batch, 3, 1, 1, generator=g)
    angle = torch.rand(batch, 1, 1, generator=g) * 2 * math.pi
    t = (cols * angle.cos() + rows * angle.sin() - (angle.cos().clamp(max=0) + angle.sin().clamp(max=0)))
    t = (t / (angle.cos().abs() + angle.sin().abs()))[:, None]
    base = start + (end - start) * t
    blotches = torch.nn.functional.interpolate(torch.rand(batch, 3, 4, 4, generator=g) - 0.5, size=image_size,
                                               mode="bicubic", align_corners=True)
    return (base + 0.3 * blotches).clamp(0, 1)
