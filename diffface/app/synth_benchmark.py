"""``diffface synth``: a synthetic benchmark with ground truth that is hard enough to mean something.

Each face is a random scene from the morphable model (:func:`diffface.app.synth.sample_scenes`, yaw up
to ±60°) whose ground-truth mesh lies *outside* the model: the true model-space shape is
midpoint-subdivided (a different topology, with more vertices and faces) and displaced along its
normals by a smooth random field of about 0.5-1 mm (detail the model cannot represent). That mesh,
not the model's, is rendered (per-pixel SH shading) over a random textured background, then random
occluders, Gaussian blur and Gaussian image noise are applied. Landmarks are the projected true
landmark vertices (contour landmarks marched to the silhouette) plus pixel noise. A model without an albedo
model (the Surrey model) has its faces painted with a smooth random albedo (:func:`paint_albedo`) instead of
its constant mean colour.

Output folder::

    images/NAME.png, images/NAME.pts     the photo and its 68 landmarks (300W .pts, 1-based)
    meshes/NAME.obj                      ground-truth mesh, model space, millimetres
    meshes/NAME_landmarks.npy            (68, 3) the model's 68 landmark vertices on that mesh
    params.npz                           true parameters of every face (see write_params_npz); with a painted
                                         albedo also ``albedo (N, V, 3)``, at the model's vertices
    manifest.json                        config, model identity, mesh topology, one entry per face

Subdivision appends the edge midpoints after the original vertices, so model vertex ``i`` is
vertex ``i`` of the ground-truth mesh too (landmark indices carry over).

:mod:`diffface.app.synth_sequences` writes video sequences with the same pieces (:func:`prepare_output`,
:func:`write_faces`, :func:`benchmark_manifest`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from diffface.atomic_io import atomic_write, write_text_atomic

from diffface.geometry import vertex_normals
from diffface.landmark_io import write_pts
from diffface.landmark_marching import project_landmarks
from diffface.morphable_model import MorphableModel, load_morphable_model
from diffface.params import FaceParameters
from diffface.report_images import to_uint8_image
from diffface.app.synth import (SceneConfig, detector_like_landmarks, interocular_error, random_backgrounds,
                                sample_scenes)
from diffface.renderers import FaceRenderer

FORMAT_NAME = "diffface-synth"
FORMAT_VERSION = 1


STORED_DECIMALS_MM = 4  # ground-truth vertices are rounded to 0.1 µm when stored
REFERENCE_IMAGE_SIZE = 224  # SceneConfig's default focal length frames the face at this size


def benchmark_scene(image_size: int = REFERENCE_IMAGE_SIZE, seed: int = 0) -> SceneConfig:
    """The benchmark's scenes: yaw up to ±60°, focal length scaled with the image size so that the
    face fills the frame as it does at 224 px (``SceneConfig``'s focal length is for 224 px)."""
    return SceneConfig(image_size=image_size, focal_px=SceneConfig.focal_px * image_size / REFERENCE_IMAGE_SIZE,
                       yaw_deg=60.0, seed=seed)


@dataclass
class SynthBenchmarkConfig:
    """How a synthetic benchmark is drawn (saved in its ``manifest.json``).

    Image size and seed are ``scene.image_size`` and ``scene.seed``; the whole benchmark is a pure
    function of this config and the model.

    Attributes:
        model: ``"builtin"`` or a model file.
        num_faces: number of faces.
        scene: poses, cameras, lighting, coefficient scales, landmark noise (:func:`benchmark_scene`:
            yaw up to ±60°; build it with that function when changing the image size).
        noise_std_max: image noise σ is drawn uniformly in ``[0, noise_std_max]`` (intensities in [0, 1]).
        blur_sigma_max_px: Gaussian blur σ is drawn uniformly in ``[0, blur_sigma_max_px]`` pixels.
        occluder_probability: chance that a face gets occluders (1 to ``max_occluders`` shapes).
        max_occluders: most occluding rectangles/ellipses per face.
        max_occluded_fraction: occluders hide at most this fraction of the rendered face's pixels.
        subdivision_levels: rounds of midpoint subdivision of the ground-truth mesh (each: faces x4).
        displacement_mm: the largest normal displacement of a face is drawn uniformly in this range.
        displacement_wavelength_mm: wavelengths of the displacement's plane waves are drawn in this range.
        displacement_waves: number of random plane waves summed into the displacement field.
        batch_size: faces rendered at once.
        device: ``"cpu"`` or ``"cuda"``.
        backend: rasterizer backend (``"auto"``, ``"builtin"``, ``"pytorch3d"``).
    """

    model: str = "builtin"
    num_faces: int = 32
    scene: SceneConfig = field(default_factory=benchmark_scene)
    noise_std_max: float = 0.03
    blur_sigma_max_px: float = 1.5
    occluder_probability: float = 0.5
    max_occluders: int = 3
    max_occluded_fraction: float = 0.2
    subdivision_levels: int = 1
    displacement_mm: tuple[float, float] = (0.5, 1.0)
    displacement_wavelength_mm: tuple[float, float] = (10.0, 40.0)
    displacement_waves: int = 12
    batch_size: int = 8
    device: str = "cpu"
    backend: str = "auto"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        checks = {
            "num_faces": self.num_faces >= 1,
            "scene.image_size": self.scene.image_size >= 16,
            "noise_std_max": self.noise_std_max >= 0,
            "blur_sigma_max_px": self.blur_sigma_max_px >= 0,
            "occluder_probability": 0 <= self.occluder_probability <= 1,
            "max_occluders": self.max_occluders >= 0,
            "max_occluded_fraction": 0 <= self.max_occluded_fraction <= 1,
            "subdivision_levels": self.subdivision_levels >= 0,
            "displacement_mm": 0 <= self.displacement_mm[0] <= self.displacement_mm[1],
            "displacement_wavelength_mm": 0 < self.displacement_wavelength_mm[0] <= self.displacement_wavelength_mm[1],
            "displacement_waves": self.displacement_waves >= 1,
            "batch_size": self.batch_size >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                value = getattr(self, name.split(".")[0])
                raise ValueError(f"synthetic benchmark setting {name} is out of range: {value}")


def sample_name(index: int) -> str:
    """The file stem of face ``index`` (``face_0007``)."""
    return f"face_{index:04d}"


def face_seed(seed: int, *keys: int) -> int:
    """A well-mixed seed for face ``keys`` of a benchmark (its index; or a sequence, a stream and a frame), so
    that each face is independent of batching and of the other faces."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


# -- ground-truth geometry ------------------------------------------------------------------------

def midpoint_subdivision(faces: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every triangle into four at its edge midpoints (topology only).

    New vertex ``num_vertices + e`` is the midpoint of ``edges[e]``; the original vertices keep
    their indices and the winding is kept.

    Args:
        faces: 0-based triangles.
        num_vertices: number of vertices ``V`` the faces index.

    Returns:
        ``(edges, new_faces)``: the unique edges (sorted pairs) and the subdivided triangles.

    Shape:
        faces: (F, 3) -> edges (E, 2), new_faces (4F, 3).

    Example:
        >>> edges, faces4 = midpoint_subdivision(torch.tensor([[0, 1, 2]]), 3)
        >>> edges.shape, faces4.shape
        (torch.Size([3, 2]), torch.Size([4, 3]))
    """
    a, b, c = faces.unbind(1)
    half_edges = torch.stack([torch.stack([a, b], 1), torch.stack([b, c], 1), torch.stack([c, a], 1)], 1)  # (F, 3, 2)
    edges, inverse = torch.unique(half_edges.reshape(-1, 2).sort(dim=1).values, dim=0, return_inverse=True)
    mid = inverse.reshape(-1, 3) + num_vertices  # midpoints of ab, bc, ca
    ab, bc, ca = mid.unbind(1)
    new_faces = torch.cat([torch.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    return edges, new_faces


def subdivide_attributes(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Per-vertex values of a midpoint-subdivided mesh: the originals, then each edge's mean.

    Shape:
        values: (B, V, C); edges: (E, 2) -> (B, V + E, C).
    """
    return torch.cat([values, 0.5 * (values[:, edges[:, 0]] + values[:, edges[:, 1]])], 1)


def smooth_displacement_field(points: torch.Tensor, amplitude_mm: torch.Tensor, wave_vectors: torch.Tensor,
                              phases: torch.Tensor) -> torch.Tensor:
    """A smooth random scalar field: a sum of plane waves scaled so its largest magnitude is ``amplitude_mm``.

    Args:
        points: where to evaluate it (model space, mm).
        amplitude_mm: the field's largest absolute value over ``points``, per sample.
        wave_vectors: angular wave vectors ``2π·direction / wavelength`` (rad/mm).
        phases: wave phases (rad).

    Shape:
        points: (B, N, 3); amplitude_mm: (B,); wave_vectors: (B, K, 3); phases: (B, K) -> (B, N).
    """
    field_values = torch.sin(points @ wave_vectors.transpose(1, 2) + phases[:, None]).sum(-1)
    peak = field_values.abs().amax(1, keepdim=True).clamp_min(1e-9)
    return field_values / peak * amplitude_mm[:, None]


def ground_truth_meshes(model: MorphableModel, params: FaceParameters, amplitude_mm: torch.Tensor,
                        wave_vectors: torch.Tensor, phases: torch.Tensor, levels: int = 1,
                        detail_on_neutral: bool = False, batch_invariant: bool = False,
                        albedo: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True model-space meshes outside the model's span: subdivided, then displaced along the normals.

    Args:
        model: the morphable model.
        params: the true parameters (``beta`` may be None: mean albedo).
        amplitude_mm, wave_vectors, phases: the displacement field (:func:`smooth_displacement_field`).
        levels: rounds of midpoint subdivision.
        detail_on_neutral: evaluate the field on the expression-free shape instead of the mesh itself, so that
            a subject's detail is the same on every vertex whatever the expression (video sequences).
        batch_invariant: build each face's model shape and albedo on its own: a batched matrix product rounds
            differently with the batch size (about 1e-5 mm, which shows in the stored 0.1 µm).
        albedo: the model vertices' albedo, in place of the model's (e.g. :func:`paint_albedo`'s), (B, V, 3).

    Returns:
        ``(vertices, faces, albedo)`` of the ground-truth meshes; the first ``V`` vertices are the
        model's vertices, displaced.

    Shape:
        -> vertices (B, V', 3), faces (F', 3), albedo (B, V', 3), with V' > V and F' = 4^levels·F.
    """
    each = [params.index(slice(i, i + 1)) for i in range(params.batch_size)] if batch_invariant else [params]
    vertices, model_albedo = (torch.cat(parts) for parts in zip(*(model.from_parameters(p) for p in each)))
    albedo = model_albedo if albedo is None else albedo.to(model_albedo)
    neutral = (torch.cat([model.shape(p.alpha_id, torch.zeros_like(p.alpha_exp)) for p in each])
               if detail_on_neutral else None)
    faces = model.triangles
    for _ in range(levels):
        edges, faces = midpoint_subdivision(faces, vertices.shape[1])
        vertices, albedo = subdivide_attributes(vertices, edges), subdivide_attributes(albedo, edges)
        neutral = None if neutral is None else subdivide_attributes(neutral, edges)
    displacement = smooth_displacement_field(vertices if neutral is None else neutral, amplitude_mm, wave_vectors,
                                             phases)
    vertices = vertices + displacement[..., None] * vertex_normals(vertices, faces)
    return vertices, faces, albedo


# -- a painted albedo, for models without an albedo model ----------------------------------------------

@dataclass(frozen=True)
class AlbedoPaint:
    """How :func:`paint_albedo` colours the faces of a model without an albedo model (fixed settings, recorded in
    the manifest): the model's mean colour times a per-face tone, times ``1 +`` a smooth luminance field and a
    smaller smooth field per channel, each a sum of plane waves (:func:`smooth_displacement_field`) over the
    mean shape, so that the colour sits on the skin whatever the expression.

    Attributes:
        tone_log_std: σ of the log of each face's overall brightness.
        tint_std: σ of each channel's relative change of that tone.
        luminance_amplitude: the luminance field's largest relative change is drawn uniformly in this range.
        channel_amplitude: the largest relative change of each channel's own field.
        wavelength_mm: the plane waves' wavelengths are drawn uniformly in this range (mm).
        waves: plane waves per field.
        limits: the albedo is clamped to this range.
    """

    tone_log_std: float = 0.1
    tint_std: float = 0.04
    luminance_amplitude: tuple[float, float] = (0.15, 0.3)
    channel_amplitude: float = 0.08
    wavelength_mm: tuple[float, float] = (30.0, 120.0)
    waves: int = 8
    limits: tuple[float, float] = (0.02, 1.0)


ALBEDO_PAINT = AlbedoPaint()


@dataclass
class AlbedoDraw:
    """One face's painted albedo: its tone and four smooth fields (luminance, then R, G, B).

    Shape:
        tone: (3,); amplitudes: (4,); wave_vectors: (4, K, 3) rad/mm; phases: (4, K).
    """

    tone: torch.Tensor
    amplitudes: torch.Tensor
    wave_vectors: torch.Tensor
    phases: torch.Tensor


def draw_albedo(seed: int, paint: AlbedoPaint = ALBEDO_PAINT) -> AlbedoDraw:
    """A painted albedo's random settings, from their own seed (so nothing else a face draws changes)."""
    g = torch.Generator().manual_seed(seed)
    brightness = torch.exp(torch.randn(1, generator=g) * paint.tone_log_std)
    tone = brightness * (1 + torch.randn(3, generator=g) * paint.tint_std)
    low, high = paint.luminance_amplitude
    amplitudes = torch.cat([low + (high - low) * torch.rand(1, generator=g), torch.full((3,), paint.channel_amplitude)])
    directions = torch.nn.functional.normalize(torch.randn(4, paint.waves, 3, generator=g), dim=-1)
    shortest, longest = paint.wavelength_mm
    wavelengths = shortest + (longest - shortest) * torch.rand(4, paint.waves, 1, generator=g)
    phases = torch.rand(4, paint.waves, generator=g) * 2 * math.pi
    return AlbedoDraw(tone, amplitudes, 2 * math.pi * directions / wavelengths, phases)


def paint_albedo(model: MorphableModel, draws: list[AlbedoDraw], paint: AlbedoPaint = ALBEDO_PAINT) -> torch.Tensor:
    """Smooth random albedos over the model's mean shape (:class:`AlbedoPaint`), one per draw.

    Shape:
        -> (B, V, 3) on the model's device.
    """
    points = model.mean_shape.detach().cpu().float()
    albedo = []
    for draw in draws:
        fields = smooth_displacement_field(points.expand(4, -1, -1), draw.amplitudes, draw.wave_vectors,
                                           draw.phases)  # (4, V): luminance, R, G, B
        relative = 1 + fields[0, :, None] + fields[1:].T
        albedo.append((model.albedo_mean.cpu() * draw.tone * relative).clamp(*paint.limits))
    return torch.stack(albedo).to(model.mean_shape.device)


def painted_albedo_record() -> dict:
    """The manifest's ``albedo`` entry of a benchmark whose faces :func:`paint_albedo` coloured."""
    return {"source": "painted: a smooth random field (the model has no albedo model)", **asdict(ALBEDO_PAINT),
            "params_npz": "albedo (N, V, 3) at the model's vertices"}


# -- image degradations ---------------------------------------------------------------------------

def textured_backgrounds(batch: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """:func:`~diffface.app.synth.random_backgrounds` plus mid-frequency texture, values in [0, 1].

    Shape:
        -> (B, 3, H, W).
    """
    g = torch.Generator().manual_seed(seed + 5)
    texture = torch.nn.functional.interpolate(torch.rand(batch, 3, 16, 16, generator=g) - 0.5, size=image_size,
                                              mode="bilinear", align_corners=False)
    return (random_backgrounds(batch, image_size, seed) + 0.25 * texture).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, sigma_px: torch.Tensor, radius_px: int | None = None) -> torch.Tensor:
    """Blur each image with its own isotropic Gaussian (σ = 0 leaves it unchanged), edges replicated.

    The kernels are cut at ``radius_px`` (default: 3σ of the batch's largest σ, so an image's result depends a
    little on the others in its batch; give a fixed radius for results independent of batching).

    Shape:
        images: (B, C, H, W); sigma_px: (B,) -> (B, C, H, W).
    """
    B, C, H, W = images.shape
    if radius_px is not None:
        radius = max(int(radius_px), 1)
    else:
        radius = max(int(math.ceil(3 * float(sigma_px.max()))), 1) if B else 1
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    sigma = sigma_px.to(images)[:, None]
    kernel = torch.where(sigma > 0, torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-6)) ** 2),
                         (offsets == 0).to(images).expand(B, -1))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B·C, K)
    x = torch.nn.functional.pad(images.reshape(1, B * C, H, W), (radius,) * 4, mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel[:, None, None, :], groups=B * C)
    x = torch.nn.functional.conv2d(x, kernel[:, None, :, None], groups=B * C)
    return x.reshape(B, C, H, W)


def _shape_mask(kind: str, centre: tuple[float, float], half: tuple[float, float], size: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                                indexing="ij")
    du, dv = (cols - centre[0]) / half[0], (rows - centre[1]) / half[1]
    if kind == "ellipse":
        return du ** 2 + dv ** 2 <= 1
    return (du.abs() <= 1) & (dv.abs() <= 1)


def random_occluders(face_mask: torch.Tensor, generator: torch.Generator, probability: float, max_shapes: int,
                     max_fraction: float, attempts: int = 10) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random filled rectangles and ellipses of random colour over one face.

    Shapes are placed within the face's bounding box; a shape that would make the occluders hide
    more than ``max_fraction`` of the face's pixels is redrawn smaller (up to ``attempts`` times),
    then dropped.

    Args:
        face_mask: where the face was rendered.
        generator: the face's random generator.
        probability: chance of any occluder.
        max_shapes: most shapes.
        max_fraction: largest fraction of ``face_mask`` the occluders may cover.

    Returns:
        ``(mask, colour, count)``: where the occluders are, their colours there, how many were drawn.

    Shape:
        face_mask: (H, W) bool -> mask (H, W) bool, colour (3, H, W).
    """
    size = face_mask.shape[-1]
    mask = torch.zeros(face_mask.shape, dtype=torch.bool)
    colour = torch.zeros(3, *face_mask.shape)
    face = face_mask.cpu()
    face_pixels = int(face.sum())
    if face_pixels == 0 or max_shapes == 0 or float(torch.rand(1, generator=generator)) >= probability:
        return mask, colour, 0
    rows, cols = face.nonzero(as_tuple=True)
    top, bottom, left, right = float(rows.min()), float(rows.max()), float(cols.min()), float(cols.max())
    count = 0
    for _ in range(int(torch.randint(1, max_shapes + 1, (1,), generator=generator))):
        scale = 1.0
        for _ in range(attempts):
            u = torch.rand(6, generator=generator).tolist()
            kind = "ellipse" if u[0] < 0.5 else "rectangle"
            centre = (left + u[1] * (right - left), top + u[2] * (bottom - top))
            half = (max(1.0, scale * (0.05 + 0.2 * u[3]) * (right - left)),
                    max(1.0, scale * (0.05 + 0.2 * u[4]) * (bottom - top)))
            shape = _shape_mask(kind, centre, half, size)
            if float((mask | shape)[face].sum()) <= max_fraction * face_pixels:
                rgb = torch.rand(3, generator=generator)
                colour[:, shape] = rgb[:, None]
                mask |= shape
                count += 1
                break
            scale *= 0.7
    return mask, colour, count


# -- writing ---------------------------------------------------------------------------------------

def _write_png(path: Path, image: np.ndarray) -> Path:
    with atomic_write(path) as handle:  # lossless at any level; level 1 writes 4x faster than the default 6
        Image.fromarray(image).save(handle, format="PNG", compress_level=1)
    return path


class _ObjWriter:
    """Writes meshes of one topology as :func:`~diffface.mesh_io.write_obj` does, byte for byte, formatting the
    triangle lines once instead of once per face (they were a third of the time of a ``diffface synth``)."""

    def __init__(self, faces: np.ndarray):
        self.num_faces = len(faces)
        self.face_lines = ("f %d %d %d\n" * len(faces)) % tuple((faces.astype(np.int64) + 1).ravel().tolist())

    def write(self, path: Path, vertices: np.ndarray) -> Path:
        vertex_lines = ("v %r %r %r\n" * len(vertices)) % tuple(vertices.astype(np.float64).ravel().tolist())
        header = f"# diffface mesh: {len(vertices)} vertices, {self.num_faces} triangles\n"
        return write_text_atomic(path, header + vertex_lines + self.face_lines)


def _write_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_write(path) as handle:
        np.save(handle, array)
    return path


def _previous_benchmark_files(out: Path) -> list[Path]:
    """The files of a previous benchmark in ``out`` (to replace), or ``[]`` for a new or empty folder.

    Raises:
        ValueError: if ``out`` is a file, or a non-empty folder that is not a previous benchmark.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output path exists and is not a folder")
    manifest = out / "manifest.json"
    if not manifest.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(f"{out}: output folder is not empty and holds no synthetic benchmark manifest.json; "
                             "choose an empty or new folder")
        return []
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
        samples = old["samples"] if old.get("format") == FORMAT_NAME else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{manifest}: unreadable manifest ({exc}); choose an empty or new folder") from exc
    if not isinstance(samples, list):
        raise ValueError(f"{manifest}: not a {FORMAT_NAME} manifest; choose an empty or new folder")
    files = [out / "params.npz", manifest]
    for sample in samples:
        for key in ("image", "landmarks", "mesh", "landmarks_3d"):
            relative = sample.get(key) if isinstance(sample, dict) else None
            # only our own sub-folders: a tampered manifest cannot delete anything else
            if isinstance(relative, str) and relative.split("/")[0] in ("images", "meshes") and ".." not in relative:
                files.append(out / relative)
    return files


def write_params_npz(path: Path, model: MorphableModel, params: FaceParameters, names: list[str], image_size: int,
                     extra: dict[str, np.ndarray]) -> Path:
    """Write the true parameters of every face (atomically).

    Arrays: ``params (N, P)`` float32, the packed full vector (``model.layout.pack(...,
    include_fitting=True)``); ``param_names (P,)``; ``sample_names (N,)``; ``image_size`` ``[H, W]``;
    ``layout`` ``[id_dims, exp_dims, tex_dims]``; ``model_fingerprint``; and ``extra`` (per-face
    landmarks, marched landmark vertex indices and degradation settings).
    """
    layout = model.layout
    arrays = {
        "params": layout.pack(params, include_fitting=True).detach().cpu().numpy().astype(np.float32),
        "param_names": np.array(layout.names(include_fitting=True)),
        "sample_names": np.array(names),
        "image_size": np.array([image_size, image_size], dtype=np.int64),
        "layout": np.array([layout.id_dims, layout.exp_dims, layout.tex_dims], dtype=np.int64),
        "model_fingerprint": np.array(model.fingerprint),
        **extra,
    }
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    return path


# -- the benchmark ---------------------------------------------------------------------------------

@dataclass
class FaceDraws:
    """Per-face random settings, each face from its own generator (independent of batching)."""

    generator: torch.Generator  # occluders and image noise
    amplitude_mm: float
    wave_vectors: torch.Tensor  # (K, 3) rad/mm
    phases: torch.Tensor  # (K,)
    noise_std: float
    blur_sigma_px: float
    seed: int  # landmark noise
    background_seed: int
    albedo: AlbedoDraw | None = None  # used by models without an albedo model: paint_albedo


ALBEDO_STREAM = 1  # a face's painted albedo draws from face_seed(its seed, ALBEDO_STREAM)


def draw_face(config: SynthBenchmarkConfig, seed: int) -> FaceDraws:
    """The detail, blur and noise settings of one face, from its seed (:func:`face_seed`); the returned
    generator goes on from there (a painted albedo has its own: :data:`ALBEDO_STREAM`)."""
    g = torch.Generator().manual_seed(seed)
    low, high = config.displacement_mm
    amplitude = low + (high - low) * float(torch.rand(1, generator=g))
    K = config.displacement_waves
    directions = torch.nn.functional.normalize(torch.randn(K, 3, generator=g), dim=1)
    shortest, longest = config.displacement_wavelength_mm
    wavelengths = shortest + (longest - shortest) * torch.rand(K, 1, generator=g)
    phases = torch.rand(K, generator=g) * 2 * math.pi
    noise_std = config.noise_std_max * float(torch.rand(1, generator=g))
    blur = config.blur_sigma_max_px * float(torch.rand(1, generator=g))
    return FaceDraws(g, amplitude, 2 * math.pi * directions / wavelengths, phases, noise_std, blur, seed, seed,
                     draw_albedo(face_seed(seed, ALBEDO_STREAM)))


def _render_chunk(model: MorphableModel, renderer, params: FaceParameters, draws: list[FaceDraws],
                  config: SynthBenchmarkConfig, blur_radius_px: int | None = None,
                  detail_on_neutral: bool = False, batch_invariant: bool = False) -> dict:
    """Ground-truth meshes, degraded photos and landmarks of one batch of faces (``blur_radius_px``:
    :func:`gaussian_blur`; ``detail_on_neutral``, ``batch_invariant``: :func:`ground_truth_meshes`)."""
    device = params.translation.device
    size = config.scene.image_size
    painted = paint_albedo(model, [d.albedo for d in draws]) if model.tex_dims == 0 else None
    vertices, faces, albedo = ground_truth_meshes(
        model, params, torch.tensor([d.amplitude_mm for d in draws], device=device),
        torch.stack([d.wave_vectors for d in draws]).to(device), torch.stack([d.phases for d in draws]).to(device),
        config.subdivision_levels, detail_on_neutral, batch_invariant, painted)
    out = renderer(vertices, faces, albedo, params.sh, angles=params.angles, translation=params.translation,
                   focal=params.focal, principal_point=params.principal_point)
    backgrounds = torch.cat([textured_backgrounds(1, size, d.background_seed) for d in draws]).to(device)
    face_mask = out.fragments.mask
    images = torch.where(face_mask[:, None], out.images.permute(0, 3, 1, 2), backgrounds).clamp(0, 1)

    occluders = [random_occluders(face_mask[i], d.generator, config.occluder_probability, config.max_occluders,
                                  config.max_occluded_fraction) for i, d in enumerate(draws)]
    occluder_mask = torch.stack([m for m, _, _ in occluders]).to(device)
    images = torch.where(occluder_mask[:, None], torch.stack([c for _, c, _ in occluders]).to(device), images)
    images = gaussian_blur(images, torch.tensor([d.blur_sigma_px for d in draws]), blur_radius_px)
    noise = torch.stack([torch.randn(3, size, size, generator=d.generator) * d.noise_std for d in draws])
    images = (images + noise.to(device)).clamp(0, 1)

    V = model.num_vertices
    clean_2d, landmark_vertices = project_landmarks(model, params, vertices[:, :V])
    # stored to 0.1 µm in float64: exact through the .obj text, and a third of the file size of float32's digits
    vertices = vertices.double().round(decimals=STORED_DECIMALS_MM)
    observed_2d = torch.cat([detector_like_landmarks(clean_2d[i:i + 1], config.scene, seed=d.seed)
                             for i, d in enumerate(draws)])
    face_pixels = face_mask.sum((1, 2)).clamp_min(1)
    return {
        "vertices": vertices, "faces": faces, "images": images, "landmarks_3d": model.landmarks(vertices[:, :V]),
        "landmarks_2d": observed_2d, "landmarks_2d_clean": clean_2d, "landmark_vertex_indices": landmark_vertices,
        "landmark_error_interocular": interocular_error(observed_2d, clean_2d).tolist(),
        "occluders": [n for _, _, n in occluders],
        "occluded_fraction": ((occluder_mask & face_mask).sum((1, 2)) / face_pixels).tolist(),
        "face_pixels": face_mask.sum((1, 2)).tolist(),
        **({} if painted is None else {"albedo": painted}),
    }


def prepare_output(out: Path, config: SynthBenchmarkConfig, model: MorphableModel | None = None) -> MorphableModel:
    """Check ``out`` (new, empty, or a previous benchmark: :func:`_previous_benchmark_files`), load the model
    (unless given), then remove the previous benchmark's files and make ``images/`` and ``meshes/``.

    Returns:
        The model, on ``config.device``.
    """
    stale = _previous_benchmark_files(out)  # checked before the model loads, so bad folders fail fast
    model = (model if model is not None else load_morphable_model(config.model)).to(torch.device(config.device))
    for path in stale:  # so no face of a larger previous run survives
        path.unlink(missing_ok=True)
    for folder in sorted({path.parent for path in stale if path.parent.parent == out / "images"}):
        if folder.is_dir() and not any(folder.iterdir()):  # a previous sequence's image folder
            folder.rmdir()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "meshes").mkdir(exist_ok=True)
    return model


def write_faces(out: Path, model: MorphableModel, config: SynthBenchmarkConfig, truth: FaceParameters,
                draws: list[FaceDraws], names: list[str], image_stems: list[str],
                progress: Callable[[int], None] | None = None,
                **render_options) -> tuple[list[dict], dict[str, np.ndarray], tuple[int, int]]:
    """Render the faces ``truth`` in batches of ``config.batch_size`` and write each one's files.

    Face ``i`` is written as ``out/IMAGE_STEM.png`` + ``.pts`` (``image_stems[i]``, relative to ``out``),
    ``out/meshes/NAME.obj`` and ``out/meshes/NAME_landmarks.npy`` (``names[i]``).

    Args:
        render_options: passed to :func:`_render_chunk`.

    Returns:
        ``(samples, arrays, mesh_size)``: the manifest's entry of every face, the per-face arrays of
        ``params.npz`` (landmarks and degradation settings) and ``(vertices, faces)`` of the ground-truth meshes.
    """
    size = config.scene.image_size
    renderer = FaceRenderer(model, size, per_pixel=True, backend=config.backend).renderer
    painted = model.tex_dims == 0  # paint_albedo's albedo goes to params.npz
    keys = ("landmarks_2d", "landmarks_2d_clean", "landmark_vertex_indices") + (("albedo",) if painted else ())
    samples, per_face = [], {key: [] for key in keys}
    mesh_size = (0, 0)
    obj_writer = None
    for start in range(0, len(names), config.batch_size):
        stop = min(start + config.batch_size, len(names))
        with torch.no_grad():
            chunk = _render_chunk(model, renderer, truth.index(slice(start, stop)), draws[start:stop], config,
                                  **render_options)
        faces_np = chunk["faces"].cpu().numpy()
        if obj_writer is None:  # every face of a benchmark has the same (subdivided) topology
            obj_writer = _ObjWriter(faces_np)
        mesh_size = (int(chunk["vertices"].shape[1]), len(faces_np))
        for k, i in enumerate(range(start, stop)):
            name, image = names[i], image_stems[i]
            _write_png(out / f"{image}.png", to_uint8_image(chunk["images"][k]))
            write_pts(out / f"{image}.pts", chunk["landmarks_2d"][k].cpu().double().numpy())
            obj_writer.write(out / "meshes" / f"{name}.obj", chunk["vertices"][k].cpu().numpy())
            _write_npy(out / "meshes" / f"{name}_landmarks.npy", chunk["landmarks_3d"][k].cpu().double().numpy())
            pitch, yaw, roll = (math.degrees(a) for a in truth.angles[i].tolist())
            samples.append({
                "name": name, "image": f"{image}.png", "landmarks": f"{image}.pts",
                "mesh": f"meshes/{name}.obj", "landmarks_3d": f"meshes/{name}_landmarks.npy",
                "yaw_deg": yaw, "pitch_deg": pitch, "roll_deg": roll,
                "noise_std": draws[i].noise_std, "blur_sigma_px": draws[i].blur_sigma_px,
                "occluders": chunk["occluders"][k], "occluded_fraction": chunk["occluded_fraction"][k],
                "face_pixels": int(chunk["face_pixels"][k]), "displacement_amplitude_mm": draws[i].amplitude_mm,
                "landmark_error_interocular": chunk["landmark_error_interocular"][k],
                **({"albedo_tone": draws[i].albedo.tone.tolist(),
                    "albedo_luminance_amplitude": float(draws[i].albedo.amplitudes[0])} if painted else {}),
            })
        for key in per_face:
            per_face[key].append(chunk[key].cpu().numpy())
        if progress is not None:
            progress(stop - start)
    arrays = {key: np.concatenate(value) for key, value in per_face.items()}
    arrays.update({key: np.array([s[key] for s in samples], dtype=np.float64)
                   for key in ("noise_std", "blur_sigma_px", "occluded_fraction", "displacement_amplitude_mm")})
    return samples, arrays, mesh_size


def benchmark_manifest(config_record: dict, config: SynthBenchmarkConfig, model: MorphableModel,
                       mesh_size: tuple[int, int], samples: list[dict], **entries) -> dict:
    """What ``manifest.json`` holds: format, ``config_record`` (the config as drawn), the model's identity,
    the ground-truth mesh and landmark settings (from ``config``), ``entries``, then ``samples``."""
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "config": config_record,
        "model": {"name": model.name, "spec": config.model, "fingerprint": model.fingerprint,
                  "vertices": model.num_vertices, "faces": int(model.triangles.shape[0])},
        "ground_truth_mesh": {"space": "model, millimetres", "decimals": STORED_DECIMALS_MM,
                              "subdivision": "midpoint", "levels": config.subdivision_levels,
                              "vertices": mesh_size[0], "faces": mesh_size[1],
                              "first_vertices_are_model_vertices": model.num_vertices},
        "landmarks": {"pts": "0-based pixels + 1 (300W)", "noise_px": config.scene.landmark_noise_px,
                      "offset_px": config.scene.landmark_offset_px, "scale": config.scene.landmark_scale,
                      "contour_slide_px": config.scene.contour_slide_px,
                      "error_interocular_mean": float(np.mean([s["landmark_error_interocular"] for s in samples])),
                      "landmarks_3d": "the model's 68 landmark vertices on the ground-truth mesh, NaN if undefined"},
        "params": "params.npz",
        **({} if model.tex_dims else {"albedo": painted_albedo_record()}),
        **entries,
        "samples": samples,
    }


def benchmark_summary(config: SynthBenchmarkConfig, model: MorphableModel, mesh_size: tuple[int, int],
                      samples: list[dict], started: float, out: Path) -> dict:
    """The figures a run prints: sizes, the largest yaw, mean degradations, seconds since ``started``, paths."""
    return {
        "image_size": config.scene.image_size, "model": model.name,
        "mesh_vertices": mesh_size[0], "mesh_faces": mesh_size[1],
        "model_vertices": model.num_vertices, "model_faces": int(model.triangles.shape[0]),
        "yaw_abs_max_deg": max(abs(s["yaw_deg"]) for s in samples),
        "occluded_faces": sum(s["occluders"] > 0 for s in samples),
        "noise_std_mean": float(np.mean([s["noise_std"] for s in samples])),
        "blur_sigma_px_mean": float(np.mean([s["blur_sigma_px"] for s in samples])),
        "displacement_mm_mean": float(np.mean([s["displacement_amplitude_mm"] for s in samples])),
        "landmark_error_interocular_mean": float(np.mean([s["landmark_error_interocular"] for s in samples])),
        "seconds": time.perf_counter() - started,
        "out": str(out), "manifest": str(out / "manifest.json"),
    }


def generate_benchmark(out_dir: str | Path, config: SynthBenchmarkConfig = SynthBenchmarkConfig(),
                       progress: Callable[[int], None] | None = None,
                       model: MorphableModel | None = None) -> dict:
    """Write a synthetic benchmark with ground truth to ``out_dir`` (layout: see the module docstring).

    Args:
        out_dir: an empty or new folder, or a previous benchmark (its samples are replaced).
        config: what to draw.
        progress: called with the number of faces finished after each batch.
        model: the morphable model, if already loaded (else ``config.model`` is loaded).

    Returns:
        A summary: counts, mesh sizes, timings, mean degradation settings, output paths.

    Example:
        >>> summary = generate_benchmark("S", SynthBenchmarkConfig(num_faces=4))
        >>> sorted(Path("S").iterdir())[:2]
        [PosixPath('S/images'), PosixPath('S/manifest.json')]
    """
    config.validate()
    started = time.perf_counter()
    out = Path(out_dir)
    model = prepare_output(out, config, model)
    truth = sample_scenes(model, config.num_faces, config.scene)
    names = [sample_name(i) for i in range(config.num_faces)]
    draws = [draw_face(config, face_seed(config.scene.seed, i)) for i in range(config.num_faces)]
    samples, arrays, mesh_size = write_faces(out, model, config, truth, draws, names,
                                             [f"images/{name}" for name in names], progress)
    write_params_npz(out / "params.npz", model, truth, names, config.scene.image_size, arrays)
    manifest = benchmark_manifest(asdict(config), config, model, mesh_size, samples)
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1))
    return {"faces": config.num_faces, **benchmark_summary(config, model, mesh_size, samples, started, out)}
