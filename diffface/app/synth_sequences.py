"""``diffface synth --sequences N --frames T``: synthetic videos with ground truth for every frame.

Each sequence films one subject with one camera: one identity, albedo, ground-truth detail field
(:func:`~diffface.app.synth_benchmark.ground_truth_meshes`, evaluated on the neutral shape so the
detail stays on the skin whatever the expression), textured background, SH light, blur σ and noise σ,
all drawn as the single-face benchmark draws them (:mod:`diffface.app.synth_benchmark`). What changes
per frame:

- the head moves smoothly (:func:`smooth_curve`): yaw within ±60° (a slow sweep across the sequence
  plus slow waves of random phase), pitch within ±15°, roll within ±10°, the face's centre drifting
  within ±2 cm in x and y and ±5 % in depth;
- the expression moves between keyframes drawn from the prior every 16 frames, with a cosine ease
  (:func:`expression_track`);
- the image noise and the landmark noise are drawn anew every frame (a detector's per-frame jitter).

The first ``static_sequences`` sequences keep pose, translation and expression fixed (a random pose as
the benchmark draws it): only the image noise and landmark noise change, to measure the jitter of a
method on a still head. There are no occluders by default: a new random occluder every frame is not
a video (``render.occluder_probability`` still adds them).

Output folder::

    images/seq_000/seq_000_f0000.png, .pts   frame 0 of sequence 0 and its 68 landmarks, one folder a subject
    meshes/seq_000_f0000.obj                  that frame's ground-truth mesh (model space, mm), flat so that
    meshes/seq_000_f0000_landmarks.npy        ``diffface evaluate`` and ``baselines`` pair by the file stem
    params.npz                                the benchmark's arrays plus ``sequence (N,)`` and ``frame (N,)``
    manifest.json                             the benchmark's entries, ``sequences`` (name, frames, motion,
                                              images), and ``sequence``/``frame`` in every sample

The whole folder is a pure function of the config and the model, independent of the batch size.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from diffface.atomic_io import write_text_atomic
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.app.synth import rotated_centroid, sample_scenes
from diffface.app.synth_benchmark import (FaceDraws, SynthBenchmarkConfig, benchmark_manifest, benchmark_summary,
                                          draw_face, face_seed, prepare_output, write_faces, write_params_npz)

# streams of a sequence's seed (face_seed(seed, sequence, STREAM)): what the camera sees of the subject, the
# subject and its still pose, and each frame (face_seed(seed, sequence, FRAME_STREAM, frame))
LOOK_STREAM, SUBJECT_STREAM, FRAME_STREAM = 0, 1, 2


def _sequence_frames() -> SynthBenchmarkConfig:
    return SynthBenchmarkConfig(occluder_probability=0.0)


@dataclass
class SequenceConfig:
    """How synthetic video sequences are drawn (saved in their ``manifest.json``).

    Attributes:
        num_sequences: number of sequences, one subject each.
        frames: frames per sequence.
        static_sequences: the first this many sequences keep pose, translation and expression fixed (only image
            and landmark noise change per frame); None: 1 when there are at least 2 sequences, else 0.
        yaw_sweep_fraction: a moving head's yaw sweeps linearly across the sequence over ±this fraction of the
            yaw limit ``render.scene.yaw_deg`` (random direction); slow waves fill the rest of the limit.
        motion_period_frames: the waves' periods are drawn uniformly in this range (frames).
        motion_waves: sinusoids of random period, phase and weight summed for each moving quantity.
        drift_mm: the face's centre drifts within ±this in x and y (mm).
        depth_drift: ... and within ±this fraction of its distance in depth.
        expression_keyframe_frames: frames between expression keyframes (drawn from the prior with σ ×
            ``render.scene.exp_scale``).
        render: every frame's look and ground truth, drawn as the single-face benchmark draws them: model, scene
            (image size, camera, lighting, coefficient scales, landmark noise, seed; its yaw/pitch/roll limits
            bound the motion), blur and noise, occluders (off: see the module docstring), ground-truth detail,
            batch size, device. Its ``num_faces`` is not used (the manifest records sequences × frames).
    """

    num_sequences: int = 4
    frames: int = 60
    static_sequences: int | None = None
    yaw_sweep_fraction: float = 0.5
    motion_period_frames: tuple[float, float] = (40.0, 160.0)
    motion_waves: int = 2
    drift_mm: float = 20.0
    depth_drift: float = 0.05
    expression_keyframe_frames: int = 16
    render: SynthBenchmarkConfig = field(default_factory=_sequence_frames)

    @property
    def num_static(self) -> int:
        """How many sequences are static (``static_sequences`` resolved)."""
        if self.static_sequences is not None:
            return self.static_sequences
        return 1 if self.num_sequences >= 2 else 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        checks = {
            "num_sequences": self.num_sequences >= 1,
            "frames": self.frames >= 1,
            "static_sequences": 0 <= self.num_static <= self.num_sequences,
            "yaw_sweep_fraction": 0 <= self.yaw_sweep_fraction <= 1,
            "motion_period_frames": 0 < self.motion_period_frames[0] <= self.motion_period_frames[1],
            "motion_waves": self.motion_waves >= 1,
            "drift_mm": self.drift_mm >= 0,
            "depth_drift": 0 <= self.depth_drift < 1,
            "expression_keyframe_frames": self.expression_keyframe_frames >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"synthetic sequence setting {name} is out of range: {getattr(self, name)}")
        self.render.validate()


def sequence_name(sequence: int) -> str:
    """The folder and name prefix of a sequence (``seq_003``)."""
    return f"seq_{sequence:03d}"


def frame_name(sequence: int, frame: int) -> str:
    """The file stem of a frame (``seq_003_f0042``), unique over the whole folder."""
    return f"{sequence_name(sequence)}_f{frame:04d}"


def smooth_curve(frames: int, limit: float, generator: torch.Generator, period_frames: tuple[float, float],
                 waves: int, sweep_fraction: float = 0.0) -> torch.Tensor:
    """A smooth random curve within ``±limit``: a linear sweep from one end of ``±sweep_fraction·limit`` to
    the other across the frames (random direction), plus ``waves`` sinusoids of random period (frames),
    phase and weight sharing the remaining ``(1 - sweep_fraction)·limit``.

    Its second differences are at most about ``limit·(2π / shortest period)²``.

    Shape:
        -> (T,) float64.

    Example:
        >>> curve = smooth_curve(60, 1.0, torch.Generator().manual_seed(0), (40.0, 160.0), 2)
        >>> bool(curve.abs().max() <= 1.0)
        True
    """
    direction = 1.0 if float(torch.rand(1, generator=generator)) < 0.5 else -1.0
    shortest, longest = period_frames
    periods = shortest + (longest - shortest) * torch.rand(waves, generator=generator, dtype=torch.float64)
    phases = torch.rand(waves, generator=generator, dtype=torch.float64) * 2 * math.pi
    weights = 0.1 + torch.rand(waves, generator=generator, dtype=torch.float64)
    t = torch.arange(frames, dtype=torch.float64)
    sweep = direction * (2 * t / max(frames - 1, 1) - 1)
    wobble = (weights / weights.sum() * torch.sin(2 * math.pi * t[:, None] / periods + phases)).sum(-1)
    return limit * (sweep_fraction * sweep + (1 - sweep_fraction) * wobble)


def expression_track(model: MorphableModel, frames: int, keyframe_frames: int, scale: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Expression coefficients moving smoothly between keyframes drawn from the prior (σ × ``scale``) every
    ``keyframe_frames`` frames, with a cosine ease (still at each keyframe, no jump in speed).

    Shape:
        -> (T, K_exp) float32, on the CPU.
    """
    _, keyframes, _ = model.sample_coefficients((frames - 1) // keyframe_frames + 2, scale, generator=generator)
    position = torch.arange(frames, dtype=torch.float64) / keyframe_frames
    index = position.floor().long()
    ease = ((1 - torch.cos(math.pi * (position - index))) / 2)[:, None]
    keyframes = keyframes.cpu().double()
    return ((1 - ease) * keyframes[index] + ease * keyframes[index + 1]).float()


def sequence_parameters(model: MorphableModel, config: SequenceConfig, sequence: int) -> tuple[FaceParameters,
                                                                                              list[FaceDraws]]:
    """The true parameters and the random settings of every frame of one sequence.

    One subject (identity, albedo, light, camera, detail, background, blur and noise σ) for all frames; its
    head moves (:func:`smooth_curve`, :func:`expression_track`) unless the sequence is one of the first
    ``config.num_static``; each frame has its own image and landmark noise.

    Shape:
        -> FaceParameters with batch T (all groups filled), and T draws.
    """
    seed, scene, T = config.render.scene.seed, config.render.scene, config.frames
    look = draw_face(config.render, face_seed(seed, sequence, LOOK_STREAM))
    subject = sample_scenes(model, 1, replace(scene, seed=face_seed(seed, sequence, SUBJECT_STREAM)))
    params = subject.index(torch.zeros(T, dtype=torch.long, device=subject.translation.device))
    if sequence >= config.num_static:
        g = look.generator  # the look's own draws are done: the motion goes on from its generator

        def curve(limit: float, sweep_fraction: float = 0.0) -> torch.Tensor:
            return smooth_curve(T, limit, g, config.motion_period_frames, config.motion_waves, sweep_fraction)

        angles = torch.stack([curve(math.radians(scene.pitch_deg)),
                              curve(math.radians(scene.yaw_deg), config.yaw_sweep_fraction),
                              curve(math.radians(scene.roll_deg))], -1).float()
        centre = subject.translation.cpu() + rotated_centroid(model, subject.angles.cpu())  # (1, 3)
        drift = torch.stack([curve(config.drift_mm), curve(config.drift_mm),
                             curve(config.depth_drift * float(centre[0, 2]))], -1).float()
        translation = centre + drift - rotated_centroid(model, angles)
        alpha_exp = expression_track(model, T, config.expression_keyframe_frames, scene.exp_scale, g)
        device = params.translation.device
        params = replace(params, angles=angles.to(device), translation=translation.to(device),
                         alpha_exp=alpha_exp.to(device))
    frame_seeds = [face_seed(seed, sequence, FRAME_STREAM, frame) for frame in range(T)]
    draws = [replace(look, generator=torch.Generator().manual_seed(s), seed=s) for s in frame_seeds]
    return params, draws


def _concatenate(parts: list[FaceParameters]) -> FaceParameters:
    first = parts[0]
    return FaceParameters(**{name: None if value is None else torch.cat([getattr(p, name) for p in parts])
                             for name, value in first.items()})


def generate_sequences(out_dir: str | Path, config: SequenceConfig = SequenceConfig(),
                       progress: Callable[[int], None] | None = None,
                       model: MorphableModel | None = None) -> dict:
    """Write synthetic video sequences with ground truth to ``out_dir`` (layout: see the module docstring).

    Args:
        out_dir: an empty or new folder, or a previous ``diffface synth`` folder (its files are replaced).
        config: what to draw.
        progress: called with the number of frames finished after each batch.
        model: the morphable model, if already loaded (else ``config.render.model`` is loaded).

    Returns:
        A summary: counts, mesh sizes, timings, mean degradation settings, output paths.

    Example:
        >>> summary = generate_sequences("SEQ", SequenceConfig(num_sequences=2, frames=30))
        >>> sorted(p.name for p in Path("SEQ/images").iterdir())
        ['seq_000', 'seq_001']
    """
    config.validate()
    started = time.perf_counter()
    out = Path(out_dir)
    render = replace(config.render, num_faces=config.num_sequences * config.frames)
    model = prepare_output(out, render, model)
    truth, draws, names, stems, index = [], [], [], [], []
    for sequence in range(config.num_sequences):
        params, frame_draws = sequence_parameters(model, config, sequence)
        truth.append(params)
        draws += frame_draws
        for frame in range(config.frames):
            names.append(frame_name(sequence, frame))
            stems.append(f"images/{sequence_name(sequence)}/{names[-1]}")
            index.append((sequence, frame))
        (out / "images" / sequence_name(sequence)).mkdir(exist_ok=True)
    truth = _concatenate(truth)
    # a fixed blur radius and faces built one by one: else rounding would depend on the other frames in a batch
    samples, arrays, mesh_size = write_faces(out, model, render, truth, draws, names, stems, progress,
                                             blur_radius_px=math.ceil(3 * render.blur_sigma_max_px),
                                             detail_on_neutral=True, batch_invariant=True)
    for sample, (sequence, frame) in zip(samples, index):
        sample.update(sequence=sequence, frame=frame)
    arrays.update(sequence=np.array([s for s, _ in index], dtype=np.int64),
                  frame=np.array([f for _, f in index], dtype=np.int64))
    write_params_npz(out / "params.npz", model, truth, names, render.scene.image_size, arrays)
    sequences = [{"name": sequence_name(s), "frames": config.frames,
                  "motion": "static" if s < config.num_static else "moving", "images": f"images/{sequence_name(s)}"}
                 for s in range(config.num_sequences)]
    record = asdict(replace(config, render=render, static_sequences=config.num_static))
    manifest = benchmark_manifest(record, render, model, mesh_size, samples, sequences=sequences)
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1))
    yaw_deg = np.array([s["yaw_deg"] for s in samples]).reshape(config.num_sequences, config.frames)
    yaw_ranges = np.ptp(yaw_deg[config.num_static:], axis=1)  # of the moving sequences
    return {"sequences": config.num_sequences, "frames": config.frames, "static_sequences": config.num_static,
            "images": len(samples), "yaw_range_deg_mean": float(yaw_ranges.mean()) if len(yaw_ranges) else 0.0,
            **benchmark_summary(render, model, mesh_size, samples, started, out)}
