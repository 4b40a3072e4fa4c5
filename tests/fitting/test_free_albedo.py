"""The free smooth albedo of stage 2 for models without an albedo model (fitting/free_albedo.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from diffface.app.synth import SceneConfig, random_backgrounds, sample_scenes
from diffface.app.synth_benchmark import AlbedoPaint, draw_albedo, paint_albedo
from diffface.fitting import free_albedo as free_albedo_module
from diffface.fitting.free_albedo import (FreeAlbedoModel, graph_laplacian, mesh_edges, smooth_modes,
                                          solve_free_albedo)
from diffface.fitting.frame_groups import FrameGroups
from diffface.fitting.landmark_fitting import fit_landmarks
from diffface.fitting.texture_fitting import TextureFitConfig, fit_texture, solve_albedo
from diffface.landmark_marching import project_landmarks
from diffface.lighting import sh_irradiance, sh_shading
from diffface.model_format import MorphableModelData
from diffface.morphable_model import MorphableModel, load_model_data, load_morphable_model
from diffface.renderers import FaceRenderer, UVFrame, lighting_frame_normals

SKIN = (0.72, 0.55, 0.45)  # the Surrey model's uniform mean colour


def grid_mesh(n: int) -> torch.Tensor:
    """Triangles of an n × n vertex grid. Shape: -> (2(n−1)², 3)."""
    index = torch.arange(n * n).view(n, n)
    a, b, c, d = index[:-1, :-1].flatten(), index[:-1, 1:].flatten(), index[1:, :-1].flatten(), index[1:, 1:].flatten()
    return torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])


def without_albedo(data: MorphableModelData) -> MorphableModel:
    """The model with its albedo model dropped and a uniform skin tone, as the Surrey model comes."""
    return MorphableModel(replace(data, has_albedo=False, albedo_mean=np.tile(np.array(SKIN), (data.num_vertices, 1))))


@pytest.fixture(scope="module")
def builtin_data():
    return load_model_data("builtin")


@pytest.fixture(scope="module")
def bare(builtin_data):
    """The built-in model's geometry without an albedo model."""
    return without_albedo(builtin_data)


@pytest.fixture(scope="module")
def free(bare):
    return FreeAlbedoModel(bare, modes=16, smoothness=1e-2, prior=1.0).double()


def test_mesh_edges_and_the_laplacians_quadratic_form_against_a_direct_sum():
    triangles = grid_mesh(5)
    edges = mesh_edges(triangles)
    assert edges.shape == (3 * 4 * 4 + 2 * 4, 2) and bool((edges[:, 0] < edges[:, 1]).all())
    laplacian = graph_laplacian(triangles, 25)
    x = np.random.default_rng(0).standard_normal(25)
    direct = sum((x[i] - x[j]) ** 2 for i, j in edges.tolist())
    assert x @ (laplacian @ x) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match="triangles"):
        mesh_edges(triangles[:, :2])


def test_smooth_modes_are_the_laplacians_non_constant_eigenvectors():
    triangles, V = grid_mesh(12), 144
    basis, eigenvalues = smooth_modes(triangles, V, 10)
    laplacian = graph_laplacian(triangles, V).toarray()
    assert basis.shape == (V, 10) and eigenvalues.shape == (10,)
    np.testing.assert_allclose(basis.T @ basis, np.eye(10), atol=1e-10)
    np.testing.assert_allclose(basis.sum(0), 0, atol=1e-10)
    np.testing.assert_allclose(basis.T @ laplacian @ basis, np.diag(eigenvalues), atol=1e-10)
    np.testing.assert_allclose(eigenvalues, np.linalg.eigvalsh(laplacian)[1:11], atol=1e-10)
    assert (np.diff(eigenvalues) >= -1e-12).all() and eigenvalues[0] > 0
    with pytest.raises(ValueError, match="modes"):
        smooth_modes(triangles, V, 0)


def test_arpack_agrees_with_the_dense_solver_and_is_deterministic(monkeypatch):
    triangles, V = grid_mesh(20), 400
    spectrum = np.linalg.eigvalsh(graph_laplacian(triangles, V).toarray())[1:]
    # a number of modes that ends at a gap of the spectrum (a grid's eigenvalues come in near-pairs), so that
    # both solvers must span the same space
    modes = next(k for k in range(4, 12) if spectrum[k] - spectrum[k - 1] > 1e-3 * spectrum[k])
    monkeypatch.setattr(free_albedo_module, "DENSE_EIGEN_MAX_VERTICES", 10_000)
    dense_basis, dense = smooth_modes(triangles, V, modes)
    monkeypatch.setattr(free_albedo_module, "DENSE_EIGEN_MAX_VERTICES", 100)
    basis, eigenvalues = smooth_modes(triangles, V, modes)
    np.testing.assert_allclose(eigenvalues, dense, rtol=1e-8)
    np.testing.assert_allclose(basis @ basis.T, dense_basis @ dense_basis.T, atol=1e-8)
    again, _ = smooth_modes(triangles, V, modes)
    assert np.array_equal(again, basis)


def test_the_free_albedo_model_is_an_albedo_model_whose_prior_is_the_regulariser(bare, free):
    V, K = bare.num_vertices, free.modes
    assert free.tex_dims == 3 * K and free.fingerprint == bare.fingerprint
    assert torch.equal(free.id_basis, bare.id_basis.double()) and torch.equal(free.triangles, bare.triangles)
    torch.testing.assert_close(free.albedo(torch.zeros(1, 3 * K, dtype=torch.float64))[0],
                               bare.albedo_mean.double())
    beta = torch.randn(2, 3 * K, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    deviation = free.albedo(beta) - free.albedo_mean  # (2, V, 3)
    edges = mesh_edges(bare.triangles)
    smoothness = (deviation[:, edges[:, 0]] - deviation[:, edges[:, 1]]).pow(2).sum((1, 2))
    pull = deviation.pow(2).sum((1, 2)) / V
    prior = (beta / free.albedo_std).pow(2).sum(-1)
    torch.testing.assert_close(prior, 1e-2 * smoothness + 1.0 * pull, rtol=1e-5, atol=0)
    # the albedo's mean over the mesh stays the mean colour's: the lighting carries brightness and tint
    torch.testing.assert_close(deviation.mean(1), torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_bad_free_albedo_settings(builtin_data, bare):
    with pytest.raises(ValueError, match="albedo model"):
        FreeAlbedoModel(MorphableModel(builtin_data), 8, 1e-2, 1.0)
    with pytest.raises(ValueError, match="smoothness"):
        FreeAlbedoModel(bare, 8, 0.0, 0.0)
    for bad in ({"free_albedo_smoothness": -1.0}, {"free_albedo_prior": 0.0, "free_albedo_smoothness": 0.0},
                {"free_albedo_modes": 0}):
        with pytest.raises(ValueError, match="free_albedo"):
            TextureFitConfig(**bad)


def uv_scene(model: MorphableModel, size: int = 32):
    """Of ``model`` (float32; the results in float64): two faces' vertices, lighting-frame normals and SH, a UV frame and its mask of front-facing texels."""
    truth = sample_scenes(model, 2, SceneConfig(seed=3))
    vertices = model.shape(truth.alpha_id, truth.alpha_exp).double()
    normals = lighting_frame_normals(vertices, model.triangles, truth.angles.double())
    frame = UVFrame(model.uv, model.triangles, size).double()
    front = frame((normals[..., 2:] > 0.2).double())  # texels of front-facing vertices, as the renderer's mask
    mask = (front > 1 - 1e-6).double() * frame.mask.double()
    return normals, truth.sh.double(), frame, mask


@pytest.mark.parametrize("norm", ["l2", "l1", "l21"])
def test_the_solve_matches_the_generic_albedo_solve(bare, free, norm):
    normals, sh, frame, mask = uv_scene(bare)
    g = torch.Generator().manual_seed(1)
    shading = sh_irradiance(normals, sh)
    target = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64) * mask
    reference = solve_albedo(free, frame, shading, target, mask, 1.0, norm)
    torch.testing.assert_close(solve_free_albedo(free, frame, shading, target, mask, 1.0, norm), reference)
    groups = FrameGroups.from_labels(["a", "a"])
    shared = solve_free_albedo(free, frame, shading, target, mask, 1.0, norm, groups=groups)
    assert shared.shape == (1, free.tex_dims)
    torch.testing.assert_close(shared, solve_albedo(free, frame, shading, target, mask, 1.0, norm, groups=groups))


@pytest.mark.parametrize("norm", ["l2", "l21"])
def test_the_closed_form_recovers_a_known_smooth_albedo_from_a_clean_render(bare, norm):
    """Known shape and lighting, a smooth albedo in the model's span, rendered into the UV frame without noise:
    the solve with a vanishing regulariser gives it back."""
    free = FreeAlbedoModel(bare, modes=16, smoothness=1e-9, prior=1e-9).double()
    normals, sh, frame, mask = uv_scene(bare)
    beta = torch.randn(2, free.tex_dims, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5
    albedo = free.albedo(beta)
    assert float((albedo - free.albedo_mean).abs().max()) > 0.05  # a visible pattern, not the mean colour
    target = frame(sh_shading(albedo, normals, sh)) * mask
    fitted = solve_free_albedo(free, frame, sh_irradiance(normals, sh), target, mask, 1.0, norm)
    torch.testing.assert_close(free.albedo(fitted), albedo, rtol=0, atol=1e-4)


def test_smoothness_controls_the_albedo_and_infinite_smoothness_gives_the_mean_colour(bare):
    normals, sh, frame, mask = uv_scene(bare)
    truth = FreeAlbedoModel(bare, 16, 1e-9, 1e-9).double()
    albedo = truth.albedo(torch.randn(2, truth.tex_dims, generator=torch.Generator().manual_seed(4),
                                      dtype=torch.float64) * 0.5)
    target = frame(sh_shading(albedo, normals, sh)) * mask
    edges = mesh_edges(bare.triangles)
    roughness = []
    for smoothness in (1e-4, 1e-2, 1.0, 1e9):
        model = FreeAlbedoModel(bare, 16, smoothness, 1e-3).double()
        fitted = model.albedo(solve_free_albedo(model, frame, sh_irradiance(normals, sh), target, mask))
        roughness.append(float((fitted[:, edges[:, 0]] - fitted[:, edges[:, 1]]).pow(2).sum()))
    assert roughness == sorted(roughness, reverse=True) and roughness[0] > 1e6 * roughness[-1]
    torch.testing.assert_close(fitted, torch.tensor(SKIN, dtype=torch.float64).expand_as(fitted), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def photos(bare):
    """Two photos of the albedo-less model painted with a smooth random albedo as ``diffface synth`` paints, of
    wavelengths (10–20 cm) that the tests' 16 modes can hold."""
    truth = sample_scenes(bare, 2, SceneConfig(seed=5, image_size=112, focal_px=500.0))
    paint = AlbedoPaint(wavelength_mm=(100.0, 200.0))
    albedo = paint_albedo(bare, [draw_albedo(11, paint), draw_albedo(12, paint)], paint)
    renderer = FaceRenderer(bare, 112, backend="builtin").renderer
    vertices = bare.shape(truth.alpha_id, truth.alpha_exp)
    with torch.no_grad():
        out = renderer(vertices, bare.triangles, albedo, truth.sh, angles=truth.angles, translation=truth.translation,
                       focal=truth.focal, principal_point=truth.principal_point)
    images = torch.where(out.fragments.mask[:, None], out.images.permute(0, 3, 1, 2),
                         random_backgrounds(2, 112, seed=5)).clamp(0, 1)
    landmarks, _ = project_landmarks(bare, truth)
    return truth, images.contiguous(), landmarks, albedo


def relative_pattern(albedo: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Each face's albedo at the ``seen`` vertices over its mean there, per channel (free of the overall scale
    the lighting carries). Shape: (B, V, 3), (B, V) bool -> (N, 3)."""
    weight = seen[..., None].to(albedo.dtype)
    return (albedo / ((albedo * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True)))[seen]


def test_fit_texture_fits_a_free_albedo_on_a_model_without_one(bare, photos):
    truth, images, landmarks, true_albedo = photos
    start = replace(truth, beta=None, sh=None)
    config = TextureFitConfig(rounds=1, steps_per_group=2, uv_size=32, free_albedo_modes=16)  # the fixture's modes
    fitted = fit_texture(bare, images, landmarks, start, config)
    constant = fit_texture(bare, images, landmarks, start, replace(config, free_albedo=False))
    assert constant.albedo is None and fitted.albedo.shape == (2, bare.num_vertices, 3)
    assert fitted.params.beta.shape == (2, 0) and bare.layout.pack(fitted.params, include_fitting=True).shape[1] == \
        bare.layout.full_size
    assert (fitted.texture < 0.85 * constant.texture).all()  # the colours are explained better
    torch.testing.assert_close(fitted.albedo.mean(1), torch.tensor([SKIN] * 2), rtol=0, atol=1e-5)
    # the fitted pattern follows the painted one where the camera sees the face
    normals = lighting_frame_normals(bare.shape(truth.alpha_id, truth.alpha_exp), bare.triangles, truth.angles)
    seen = normals[..., 2] > 0.3
    true_pattern = relative_pattern(true_albedo, seen)
    error = (relative_pattern(fitted.albedo, seen) - true_pattern).abs().mean()
    assert error < 0.85 * (true_pattern - 1).abs().mean()  # the constant colour's error
    # one subject: one albedo for both photos
    shared = fit_texture(bare, images, landmarks, start, replace(config, steps_per_group=0),
                         groups=FrameGroups.from_labels(["a", "a"]))
    torch.testing.assert_close(shared.albedo[0], shared.albedo[1])


def test_models_with_an_albedo_model_are_unchanged(builtin_data, photos):
    model = MorphableModel(builtin_data)
    truth, images, landmarks, _ = photos
    start = replace(truth, beta=None, sh=None)
    config = TextureFitConfig(rounds=1, steps_per_group=2, uv_size=32)
    on, off = (fit_texture(model, images, landmarks, start, replace(config, free_albedo=flag))
               for flag in (True, False))
    assert on.albedo is None and on.params.beta.shape == (2, model.tex_dims)
    for name, value in on.params.items():
        assert torch.equal(value, getattr(off.params, name)), name
    assert torch.equal(on.energy, off.energy)


def test_stage_2_on_the_surrey_model_fits_a_free_albedo(shared_data):
    model = load_morphable_model(shared_data / "sfm" / "sfm_3448.npz")
    assert model.tex_dims == 0
    truth = sample_scenes(model, 2, SceneConfig(seed=5, image_size=112, focal_px=500.0))
    albedo = paint_albedo(model, [draw_albedo(21), draw_albedo(22)])
    renderer = FaceRenderer(model, 112, backend="builtin").renderer
    with torch.no_grad():
        out = renderer(model.shape(truth.alpha_id, truth.alpha_exp), model.triangles, albedo, truth.sh,
                       angles=truth.angles, translation=truth.translation, focal=truth.focal,
                       principal_point=truth.principal_point)
    photos_sfm = torch.where(out.fragments.mask[:, None], out.images.permute(0, 3, 1, 2),
                             random_backgrounds(2, 112, seed=6)).clamp(0, 1)
    landmarks, _ = project_landmarks(model, truth)
    stage1 = fit_landmarks(model, landmarks, (112, 112)).params
    config = TextureFitConfig(rounds=1, steps_per_group=2, uv_size=32)
    fitted = fit_texture(model, photos_sfm, landmarks, stage1, config)
    constant = fit_texture(model, photos_sfm, landmarks, stage1, replace(config, free_albedo=False))
    assert fitted.params.beta.shape == (2, 0) and not fitted.diverged.any()
    assert float(fitted.albedo.std(1).min()) > 0.01  # a pattern, not the mean colour
    assert (fitted.texture < constant.texture).all()
