"""``diffface synth`` on a model without an albedo model: faces painted with a smooth random albedo."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffface.app.synth_benchmark import (ALBEDO_PAINT, SynthBenchmarkConfig, benchmark_scene, draw_albedo, draw_face,
                                          face_seed, generate_benchmark, paint_albedo)
from diffface.app.synth_sequences import SequenceConfig, generate_sequences
from diffface.fitting.free_albedo import mesh_edges
from diffface.morphable_model import MorphableModel, load_model_data

SKIN = (0.72, 0.55, 0.45)


@pytest.fixture(scope="module")
def bare():
    """The built-in model's geometry without an albedo model, in the Surrey model's uniform skin tone."""
    data = load_model_data("builtin")
    return MorphableModel(replace(data, has_albedo=False, albedo_mean=np.tile(np.array(SKIN), (data.num_vertices, 1))))


def small_config(seed=0, n=2, size=48):
    return SynthBenchmarkConfig(num_faces=n, scene=benchmark_scene(size, seed), subdivision_levels=0)


def test_the_painted_albedo_is_smooth_varied_and_a_function_of_its_seed(bare):
    albedo = paint_albedo(bare, [draw_albedo(1), draw_albedo(2)])
    assert albedo.shape == (2, bare.num_vertices, 3)
    assert torch.equal(albedo, paint_albedo(bare, [draw_albedo(1), draw_albedo(2)]))
    assert float((albedo[0] - albedo[1]).abs().max()) > 0.05
    low, high = ALBEDO_PAINT.limits
    assert float(albedo.min()) >= low and float(albedo.max()) <= high
    spread = albedo.std(1)  # (2, 3) over the face
    assert float(spread.min()) > 0.01
    # smooth: neighbouring vertices differ far less than the face's colours do (white noise: about 1.1x)
    edges = mesh_edges(bare.triangles)
    step = (albedo[:, edges[:, 0]] - albedo[:, edges[:, 1]]).abs().mean(1)  # (2, 3)
    assert bool((step < 0.3 * spread).all())


def test_synth_paints_a_model_without_albedo_and_records_it(bare, tmp_path):
    config = small_config(seed=4)
    generate_benchmark(tmp_path / "S", config, model=bare)
    data = np.load(tmp_path / "S" / "params.npz")
    draws = [draw_face(config, face_seed(4, i)).albedo for i in range(2)]
    np.testing.assert_array_equal(data["albedo"], paint_albedo(bare, draws).numpy())
    manifest = json.loads((tmp_path / "S" / "manifest.json").read_text())
    assert manifest["albedo"]["source"].startswith("painted") and manifest["albedo"]["waves"] == ALBEDO_PAINT.waves
    assert all(len(sample["albedo_tone"]) == 3 for sample in manifest["samples"])
    # the same seed: the same benchmark, byte for byte; another seed: another albedo
    generate_benchmark(tmp_path / "again", config, model=bare)
    for path in sorted(p for p in (tmp_path / "S").rglob("*") if p.is_file()):
        assert path.read_bytes() == (tmp_path / "again" / path.relative_to(tmp_path / "S")).read_bytes(), path.name
    generate_benchmark(tmp_path / "other", small_config(seed=5), model=bare)
    assert not np.allclose(np.load(tmp_path / "other" / "params.npz")["albedo"], data["albedo"])


def test_a_model_with_albedo_is_rendered_with_its_own(tmp_path):
    config = small_config(n=1)
    generate_benchmark(tmp_path / "S", config)
    assert "albedo" not in np.load(tmp_path / "S" / "params.npz")
    manifest = json.loads((tmp_path / "S" / "manifest.json").read_text())
    assert "albedo" not in manifest and "albedo_tone" not in manifest["samples"][0]


def test_a_sequence_keeps_its_subjects_painted_albedo(bare, tmp_path):
    config = SequenceConfig(num_sequences=2, frames=2, render=replace(small_config(), occluder_probability=0.0))
    generate_sequences(tmp_path / "SEQ", config, model=bare)
    albedo = np.load(tmp_path / "SEQ" / "params.npz")["albedo"]  # (4, V, 3): sequence 0's frames, then 1's
    np.testing.assert_array_equal(albedo[0], albedo[1])
    np.testing.assert_array_equal(albedo[2], albedo[3])
    assert not np.allclose(albedo[0], albedo[2])
