import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffface.camera import perspective_project
from diffface.landmark_io import read_pts
from diffface.mesh_io import read_obj
from diffface.morphable_model import load_morphable_model
from diffface.app.synth_benchmark import (SynthBenchmarkConfig, benchmark_scene, face_seed, gaussian_blur,
                                      generate_benchmark, midpoint_subdivision, random_occluders,
                                      subdivide_attributes, textured_backgrounds)

SIZE, N = 96, 3


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


def small_config(seed=0, n=N, size=SIZE, **kw):
    return SynthBenchmarkConfig(num_faces=n, scene=benchmark_scene(size, seed), **kw)


@pytest.fixture(scope="module")
def bench(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "S"
    summary = generate_benchmark(out, small_config(occluder_probability=1.0), model=model)
    return out, summary


@pytest.fixture(scope="module")
def meshes(bench):
    out, _ = bench
    return [read_obj(out / "meshes" / f"face_{i:04d}.obj") for i in range(N)]


def load_truth(out, model):
    data = np.load(out / "params.npz")
    params = model.layout.unpack(torch.from_numpy(data["params"]))
    return data, params


def test_files_and_shapes(bench, meshes, model):
    out, summary = bench
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "diffface-synth" and manifest["model"]["fingerprint"] == model.fingerprint
    assert [s["name"] for s in manifest["samples"]] == ["face_0000", "face_0001", "face_0002"]
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.json", "meshes", "params.npz"]
    assert not list(out.rglob("*.tmp"))
    for sample in manifest["samples"]:
        image = np.asarray(Image.open(out / sample["image"]))
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert read_pts(out / sample["landmarks"]).shape == (68, 2)
        vertices, faces = meshes[int(sample["name"][-4:])]
        assert vertices.shape == (summary["mesh_vertices"], 3) and faces.shape == (summary["mesh_faces"], 3)
        assert np.load(out / sample["landmarks_3d"]).shape == (68, 3)
        assert abs(sample["yaw_deg"]) <= 60 and 0 <= sample["occluded_fraction"] <= 0.2 + 1e-6
    data, params = load_truth(out, model)
    assert data["params"].shape == (N, model.layout.full_size)
    assert list(data["param_names"]) == model.layout.names(include_fitting=True)
    assert list(data["sample_names"]) == ["face_0000", "face_0001", "face_0002"]
    assert data["image_size"].tolist() == [SIZE, SIZE] and str(data["model_fingerprint"]) == model.fingerprint
    assert data["landmark_vertex_indices"].shape == (N, 68) and data["landmarks_2d"].shape == (N, 68, 2)
    assert summary["occluded_faces"] >= 1


def test_pts_match_projected_true_landmark_vertices(bench, meshes, model):
    out, _ = bench
    data, params = load_truth(out, model)
    errors = []
    for i in range(N):
        vertices, _ = meshes[i]
        true_vertices = torch.from_numpy(vertices[None, :model.num_vertices]).float()
        uv, _ = perspective_project(true_vertices, params.angles[i:i + 1], params.translation[i:i + 1],
                                    params.focal[i:i + 1], params.principal_point[i:i + 1])
        projected = uv[0, torch.from_numpy(data["landmark_vertex_indices"][i])].double().numpy()
        observed = read_pts(out / "images" / f"face_{i:04d}.pts")
        np.testing.assert_allclose(observed, data["landmarks_2d"][i], atol=1e-3)  # .pts keeps 3 decimals
        errors.append(np.linalg.norm(observed - projected, axis=1))
        assert (projected > 0).all() and (projected < SIZE).all()  # the face is in frame
    errors = np.concatenate(errors)
    noise = 2.0  # SceneConfig.landmark_noise_px
    assert np.sqrt((errors ** 2).mean()) < 2 * noise and errors.max() < 5 * noise
    assert errors.mean() > 0.5 * noise  # the noise is really there


def test_ground_truth_mesh_is_subdivided_and_smoothly_displaced(bench, meshes, model):
    out, _ = bench
    data, params = load_truth(out, model)
    model_shapes = model.shape(params.alpha_id, params.alpha_exp).double().numpy()
    V, F = model.num_vertices, model.triangles.shape[0]
    edges, _ = midpoint_subdivision(model.triangles, V)
    subdivided = subdivide_attributes(torch.from_numpy(model_shapes), edges).numpy()
    for i in range(N):
        vertices, faces = meshes[i]
        assert len(vertices) > V and len(faces) == 4 * F
        offset = np.linalg.norm(vertices[:V] - model_shapes[i], axis=1)
        assert offset.max() < 2.0 and offset.max() > 0.4  # ~0.5-1 mm of detail, no more
        # smooth: neighbouring vertices move by similar amounts (edges are a few mm long)
        signed = np.linalg.norm(vertices - subdivided[i], axis=1)
        edge_change = np.abs(signed[faces[:, 0]] - signed[faces[:, 1]])
        assert np.percentile(edge_change, 99) < 0.25
        landmarks = np.load(out / "meshes" / f"face_{i:04d}_landmarks.npy")
        np.testing.assert_array_equal(landmarks, vertices[model.landmark_indices.numpy()])


def test_images_show_the_face_over_the_background(bench, model):
    from diffface.renderers import FaceRenderer

    out, _ = bench
    _, params = load_truth(out, model)
    with torch.no_grad():
        mask = FaceRenderer(model, SIZE, backend="builtin")(params).fragments.mask
    for i in range(N):
        image = np.asarray(Image.open(out / "images" / f"face_{i:04d}.png")) / 255.0
        background = textured_backgrounds(1, SIZE, face_seed(0, i))[0].permute(1, 2, 0).numpy()
        difference = np.abs(image - background).mean(-1)
        inside, outside = np.median(difference[mask[i].numpy()]), np.median(difference[~mask[i].numpy()])
        assert 0.2 < mask[i].float().mean() < 0.9
        assert outside < 0.05 and inside > 0.05 and inside > 3 * outside


def test_same_seed_same_benchmark_other_seed_other(model, tmp_path):
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (first, again):
        generate_benchmark(out, small_config(0, n=2, size=48), model=model)
    # a rerun into a previous benchmark replaces it: no stale face survives a smaller run
    shutil.copytree(first, other)
    generate_benchmark(other, small_config(1, n=1, size=48), model=model)
    assert sorted(p.name for p in (other / "images").iterdir()) == ["face_0000.png", "face_0000.pts"]
    assert sorted(p.name for p in (other / "meshes").iterdir()) == ["face_0000.obj", "face_0000_landmarks.npy"]
    for name in ("images/face_0000.pts", "meshes/face_0000.obj", "meshes/face_0000_landmarks.npy"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()
    image = lambda out: np.asarray(Image.open(out / "images/face_0001.png"))  # noqa: E731
    np.testing.assert_array_equal(image(first), image(again))
    a, b = np.load(first / "params.npz"), np.load(again / "params.npz")
    assert all(np.array_equal(a[key], b[key]) for key in a.files)
    assert not np.array_equal(a["params"][:1], np.load(other / "params.npz")["params"])


def test_refuses_a_non_empty_folder_that_is_not_a_benchmark(model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_benchmark(tmp_path, small_config(n=1, size=48), model=model)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("change, name", [
    (dict(num_faces=0), "num_faces"), (dict(occluder_probability=1.5), "occluder_probability"),
    (dict(displacement_mm=(1.0, 0.5)), "displacement_mm"), (dict(subdivision_levels=-1), "subdivision_levels"),
])
def test_config_out_of_range_names_the_setting(change, name, tmp_path):
    config = SynthBenchmarkConfig(**{**dict(num_faces=1), **change})
    with pytest.raises(ValueError, match=name):
        generate_benchmark(tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_midpoint_subdivision_topology():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # two triangles sharing edge 0-2
    vertices = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]])
    edges, new_faces = midpoint_subdivision(faces, 4)
    assert edges.shape == (5, 2) and new_faces.shape == (8, 3)
    assert new_faces.unique().tolist() == list(range(9))
    new_vertices = subdivide_attributes(vertices, edges)
    assert torch.equal(new_vertices[0, :4], vertices[0])
    e0, e1 = new_vertices[0, new_faces[:, 1]] - new_vertices[0, new_faces[:, 0]], \
        new_vertices[0, new_faces[:, 2]] - new_vertices[0, new_faces[:, 0]]
    normals = torch.linalg.cross(e0, e1)
    assert (normals[:, 2] > 0).all() and torch.allclose(normals[:, 2], torch.full((8,), 0.25))  # winding, 2 x area


def test_gaussian_blur():
    images = torch.rand(3, 3, 20, 24)
    out = gaussian_blur(images, torch.tensor([0.0, 1.0, 2.5]))
    assert out.shape == images.shape
    assert torch.allclose(out[0], images[0], atol=1e-6)
    assert out[2].std() < out[1].std() < images[1].std()
    flat = gaussian_blur(torch.full((1, 3, 10, 10), 0.3), torch.tensor([2.0]))
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-6)


def test_random_occluders_respect_the_face_fraction():
    face = torch.zeros(64, 64, dtype=torch.bool)
    face[10:50, 16:48] = True
    for seed in range(10):
        mask, colour, count = random_occluders(face, torch.Generator().manual_seed(seed), 1.0, 3, 0.2)
        assert 1 <= count <= 3 or mask.sum() == 0
        assert (mask & face).sum() <= 0.2 * face.sum()
        assert (colour[:, ~mask] == 0).all()
    mask, _, count = random_occluders(face, torch.Generator().manual_seed(0), 0.0, 3, 0.2)
    assert count == 0 and not mask.any()


def test_obj_writer_writes_what_write_obj_writes(tmp_path):
    from diffface.mesh_io import write_obj
    from diffface.app.synth_benchmark import _ObjWriter

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 50, (80, 3))
    writer = _ObjWriter(faces)
    for k in range(2):  # the cached triangle lines serve every mesh
        vertices = np.round(rng.normal(size=(50, 3)) * 40, 4)
        writer.write(tmp_path / f"fast{k}.obj", vertices)
        write_obj(tmp_path / f"ref{k}.obj", vertices, faces)
        assert (tmp_path / f"fast{k}.obj").read_bytes() == (tmp_path / f"ref{k}.obj").read_bytes()
