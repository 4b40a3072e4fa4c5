"""Stage 2's image-space texture term (``TextureFitConfig(term="image")``, :mod:`diffface.fitting.image_term`)."""

from dataclasses import replace

import pytest
import torch

from diffface.app.synth import SceneConfig, random_backgrounds, sample_scenes
from diffface.camera import world_to_camera
from diffface.fitting.frame_groups import FrameGroups
from diffface.fitting.image_term import (ImageTerm, albedo_normal_equations, masked_pixels, resample_photos,
                                         solve_image_albedo, solve_image_lighting)
from diffface.fitting.texture_fitting import TextureFitConfig, _Stage2Energy, fit_texture, texture_norm
from diffface.geometry import face_normals, vertex_normals
from diffface.landmark_marching import project_landmarks
from diffface.renderers import FaceRenderer

SIZE = 64


def scenes(model, batch=2, seed=7, size=SIZE):
    # the benchmark's framing (focal length scaled from 1000 px at 224 px), yaw up to ±45°
    return sample_scenes(model, batch, SceneConfig(seed=seed, image_size=size, focal_px=1000.0 * size / 224))


def photograph(model, params, size=SIZE, background=True):
    """The same renderer's per-pixel image over a random background. Shape: -> (B, 3, S, S)."""
    backgrounds = random_backgrounds(params.angles.shape[0], size, seed=3).to(params.angles.dtype) if background else None
    with torch.no_grad():
        images = FaceRenderer(model, size, per_pixel=True)(params, backgrounds).images
    return images.permute(0, 3, 1, 2).contiguous()


def evaluate(model, term, params):
    vertices, albedo = model.from_parameters(params)
    return term(vertices, vertex_normals(vertices, model.triangles), albedo, params)


@pytest.fixture(scope="module")
def clean(model, model64):
    truth = scenes(model)
    truth = replace(truth, **{k: v.double() for k, v in vars(truth).items() if torch.is_tensor(v)})
    photos = photograph(model64, truth)
    return truth, photos, ImageTerm(model64.triangles, photos)


@pytest.mark.parametrize("norm", ["l1", "l2", "l21"])
def test_energy_vanishes_at_the_truth(clean, model64, norm):
    truth, photos, term = clean
    out = evaluate(model64, term, truth)
    assert out.rendered.shape == out.target.shape == (2, 3, SIZE, SIZE) and out.mask.shape == (2, 1, SIZE, SIZE)
    assert out.points.shape == (2, model64.num_vertices, 2)
    covered = out.fragments.mask.sum((1, 2)).double()
    assert (out.mask.sum((1, 2, 3)) > 0.95 * covered).all() and (covered > 300).all()
    # l2,1 carries a 1e-6 floor (the square root's epsilon)
    assert float(texture_norm(out.rendered, out.target, out.mask, norm).max()) < 2e-6
    moved = evaluate(model64, term, replace(truth, angles=truth.angles + 0.02))
    assert float(texture_norm(moved.rendered, moved.target, moved.mask, norm).min()) > 1e-3


def test_mask_is_the_front_facing_visible_triangles(clean, model64):
    truth, _, term = clean
    turned = replace(truth, angles=truth.angles + torch.tensor([0.0, 0.7, 0.0], dtype=torch.float64))  # yaw
    out = evaluate(model64, term, turned)
    # reference: the visible triangle's normal points at the camera centre (3D test, not the screen area's sign)
    vertices, _ = model64.from_parameters(turned)
    camera = world_to_camera(vertices, turned.angles, turned.translation)
    faces = model64.triangles
    normals = face_normals(camera, faces)
    centres = camera[:, faces].mean(2)
    front = (normals * -centres).sum(-1) > 0
    face = out.fragments.pix_to_face.clamp_min(0).flatten(1)
    expected = out.fragments.mask & front.gather(1, face).view_as(out.fragments.mask)
    assert torch.equal(out.mask[:, 0].bool(), expected)
    assert expected.sum() < out.fragments.mask.sum()  # turned far: some back faces are seen


def test_norms_against_direct_sums_over_the_mask(clean, model64):
    truth, photos, term = clean
    g = torch.Generator().manual_seed(0)
    noisy = ImageTerm(model64.triangles, photos + 0.05 * torch.randn(photos.shape, generator=g, dtype=photos.dtype))
    params = replace(truth, sh=truth.sh * 1.1)
    out = evaluate(model64, noisy, params)
    reference = photograph(model64, params, background=False)
    for b in range(2):
        m = out.mask[b, 0].bool()
        r = (noisy.target[b] - reference[b])[:, m]
        expected = {"l1": r.abs().sum(), "l2": r.pow(2).sum(), "l21": r.pow(2).sum(0).sqrt().sum()}
        for norm, value in expected.items():
            torch.testing.assert_close(texture_norm(out.rendered, out.target, out.mask, norm)[b], value / m.sum())


def test_gradient_matches_finite_differences(clean, model64):
    truth, photos, term = clean
    start = replace(truth, angles=truth.angles + torch.tensor([0.01, -0.02, 0.01], dtype=torch.float64),
                    alpha_id=truth.alpha_id + 0.3 * model64.id_std)

    def energy(angles, alpha_id, norm):
        out = evaluate(model64, term, replace(start, angles=angles, alpha_id=alpha_id))
        return texture_norm(out.rendered, out.target, out.mask, norm).sum()

    for norm in ("l2", "l21"):
        angles, alpha_id = start.angles.clone().requires_grad_(True), start.alpha_id.clone().requires_grad_(True)
        energy(angles, alpha_id, norm).backward()
        eps = 1e-6
        for tensor, grad, index in ((start.angles, angles.grad, (0, 1)), (start.alpha_id, alpha_id.grad, (1, 0))):
            plus, minus = tensor.clone(), tensor.clone()
            plus[index] += eps
            minus[index] -= eps
            args = ((plus, start.alpha_id), (minus, start.alpha_id)) if tensor is start.angles else \
                ((start.angles, plus), (start.angles, minus))
            numeric = (energy(*args[0], norm) - energy(*args[1], norm)) / (2 * eps)
            assert abs(float(grad[index])) > 1e-4
            torch.testing.assert_close(grad[index], numeric, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("norm", ["l2", "l1", "l21"])
def test_closed_form_lighting_and_albedo_recover_the_truth(clean, model64, norm):
    truth, _, term = clean
    out = evaluate(model64, term, replace(truth, sh=torch.zeros_like(truth.sh)))  # the lighting is not read
    sh = solve_image_lighting(out, term.faces, norm)
    # the ridge (1e-6, as in the UV term's solve) biases the second band a little: few normals face away
    torch.testing.assert_close(sh, truth.sh, atol=5e-3, rtol=0)
    relit = evaluate(model64, term, replace(truth, sh=sh))
    assert float(texture_norm(relit.rendered, relit.target, relit.mask, "l1").max()) < 1e-4
    start = replace(truth, beta=torch.zeros_like(truth.beta))
    out = evaluate(model64, term, start)
    beta = solve_image_albedo(model64, out, term.faces, truth.sh, r_beta=1e-12, norm=norm)
    torch.testing.assert_close(beta / model64.albedo_std, truth.beta / model64.albedo_std, atol=1e-3, rtol=0)
    # one subject's two frames with one albedo: the joint solve fits both
    shared = replace(truth, beta=truth.beta[:1].expand(2, -1))
    photos = photograph(model64, shared)
    out = evaluate(model64, ImageTerm(model64.triangles, photos), replace(shared, beta=torch.zeros_like(shared.beta)))
    groups = FrameGroups(torch.tensor([0, 0]), torch.tensor([False]))
    beta = solve_image_albedo(model64, out, model64.triangles, truth.sh, 1e-12, norm, groups=groups)
    torch.testing.assert_close(beta / model64.albedo_std, shared.beta[:1] / model64.albedo_std, atol=1e-3, rtol=0)


def test_robust_norms_ignore_an_occluder(clean, model64):
    truth, photos, _ = clean
    occluded = photos.clone()
    occluded[:, :, 24:32, 24:36] = torch.tensor([0.9, 0.1, 0.1], dtype=photos.dtype)[:, None, None]  # ~8 %
    term = ImageTerm(model64.triangles, occluded)
    out = evaluate(model64, term, truth)
    norms, error, energy = ("l2", "l1", "l21"), {}, {}
    for norm in norms:
        sh = solve_image_lighting(out, term.faces, norm)
        error[norm] = float((sh - truth.sh).abs().max())
        relit = evaluate(model64, term, replace(truth, sh=sh))
        energy[norm] = {n: float(texture_norm(relit.rendered, relit.target, relit.mask, n).sum()) for n in norms}
    assert error["l1"] < 0.2 * error["l2"] and error["l21"] < 0.2 * error["l2"], error
    # IRLS lowers its own norm below the least-squares solution's
    assert energy["l1"]["l1"] < energy["l2"]["l1"] and energy["l21"]["l21"] < energy["l2"]["l21"]


def test_smaller_term_size_scales_the_camera(model):
    truth = scenes(model, size=128)
    photos = photograph(model, truth, 128)
    assert torch.equal(resample_photos(photos, 128), photos)
    half = resample_photos(torch.full((1, 3, 128, 128), 0.25), 64)
    torch.testing.assert_close(half, torch.full((1, 3, 64, 64), 0.25))
    out = evaluate(model, ImageTerm(model.triangles, photos, size=64), truth)
    # pixel j of the 64-px image covers pixels 2j and 2j + 1: focal / 2, principal point (p + ½) / 2 − ½
    small = replace(truth, focal=truth.focal / 2, principal_point=(truth.principal_point + 0.5) / 2 - 0.5)
    reference = FaceRenderer(model, 64, per_pixel=True)(small)
    assert torch.equal(out.fragments.pix_to_face, reference.fragments.pix_to_face)
    torch.testing.assert_close(out.points, evaluate(model, ImageTerm(model.triangles, photos), truth).points)
    # what is left: the 128-px photo's background bleeding into the silhouette pixels at 64 px
    assert float(texture_norm(out.rendered, out.target, out.mask, "l1").max()) < 0.06


def test_masked_pixels():
    mask = torch.zeros(2, 1, 3, 3)
    mask[0, 0, 0, 1] = mask[0, 0, 2, 2] = mask[1, 0, 1, 0] = 1
    index, valid = masked_pixels(mask)
    assert index.shape == valid.shape == (2, 2)
    assert index[0].tolist() == [1, 8] and index[1, 0] == 3 and valid.tolist() == [[True, True], [True, False]]


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="term"):
        TextureFitConfig(term="pixels")
    with pytest.raises(ValueError, match="image_term_size"):
        TextureFitConfig(term="image", image_term_size=-1)
    with pytest.raises(ValueError, match="images"):
        ImageTerm(model.triangles, torch.zeros(1, 3, 32, 48))
    term = ImageTerm(model.triangles, torch.zeros(2, 3, 32, 32))
    truth = scenes(model, batch=1, size=32)
    vertices, albedo = model.from_parameters(truth)
    with pytest.raises(ValueError, match="vertices"):
        term(vertices, vertex_normals(vertices, model.triangles), albedo, truth)


@pytest.fixture(scope="module")
def fit_scene(model):
    truth = scenes(model, seed=5)
    landmarks, _ = project_landmarks(model, truth)
    start = replace(truth, alpha_id=torch.zeros_like(truth.alpha_id), beta=None, sh=None, angles=truth.angles + 0.03)
    return photograph(model, truth).clamp(0, 1), landmarks, start


def _double(params):
    return replace(params, **{k: v.double() for k, v in vars(params).items() if torch.is_tensor(v)})


def test_fit_texture_with_the_image_term(model, model64, fit_scene):
    images, landmarks, start = fit_scene
    config = TextureFitConfig(term="image", rounds=2, steps_per_group=2)
    result = fit_texture(model, images, landmarks, start, config)
    assert not result.diverged.any() and result.params.beta.shape == (2, model.tex_dims)
    initial = _Stage2Energy(model, images, landmarks, config)(replace(result.params, alpha_id=start.alpha_id,
                                                                      angles=start.angles))
    assert (result.energy < initial["energy"]).all()
    assert (result.history[-1] <= result.history[0] + 1e-6).all()
    # samples stay independent: the second alone fits as in the batch. In float64: in float32 the rounding of
    # batched products can flip the sign of a near-zero gradient, and Adam's normalised step turns that into a
    # step of the full learning rate (0.04 σ apart after two rounds), whichever sample it is
    images64, landmarks64, start64 = images.double(), landmarks.double(), _double(start)
    batch = fit_texture(model64, images64, landmarks64, start64, config)
    alone = fit_texture(model64, images64[1:], landmarks64[1:], start64.index(slice(1, 2)), config)
    torch.testing.assert_close(alone.params.alpha_id, batch.params.alpha_id[1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(alone.energy, batch.energy[1:], rtol=1e-9, atol=1e-12)
    # with one albedo for both frames
    tied = fit_texture(model, images, landmarks, start, replace(config, rounds=1),
                       groups=FrameGroups(torch.tensor([0, 0]), torch.tensor([False])))
    assert torch.equal(tied.params.beta[0], tied.params.beta[1])


def test_uv_term_ignores_the_image_settings(model, fit_scene):
    images, landmarks, start = fit_scene
    config = TextureFitConfig(rounds=1, steps_per_group=2, uv_size=32)
    plain = fit_texture(model, images, landmarks, start, config)
    other = fit_texture(model, images, landmarks, start, replace(config, term="uv", image_term_size=32))
    for name in ("alpha_id", "alpha_exp", "angles", "translation", "beta", "sh"):
        assert torch.equal(getattr(plain.params, name), getattr(other.params, name)), name
    assert torch.equal(plain.energy, other.energy)


def reference_albedo_normal_equations(basis, faces, face, bary, irradiance, weight, target):
    """The per-pixel design, written out: row (p, c) = E_c(p) · Σ_k b_k B_c(v_k)."""
    design = sum(basis[faces[face][..., k]] * bary[..., k, None, None] for k in range(3)) * irradiance[..., None]
    design, weight, target = design.flatten(1, 2), weight.flatten(1), target.flatten(1)  # (B, P·3, K)
    weighted = design * weight[..., None]
    return weighted.transpose(1, 2) @ design, (weighted.transpose(1, 2) @ target[..., None])[..., 0]


def test_albedo_normal_equations_against_the_per_pixel_design():
    g = torch.Generator().manual_seed(0)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2], [2, 3, 4], [5, 6, 7]])
    basis = torch.randn(8, 3, 4, generator=g, dtype=torch.float64)
    face = torch.randint(0, 4, (3, 10), generator=g)
    face[2] = 1  # every pixel on one triangle
    bary = torch.rand(3, 10, 3, generator=g, dtype=torch.float64)
    bary = bary / bary.sum(-1, keepdim=True)
    irradiance, weight, target = (torch.rand(3, 10, 3, generator=g, dtype=torch.float64) for _ in range(3))
    normal, rhs = albedo_normal_equations(basis, faces, face, bary, irradiance, weight, target)
    expected_normal, expected_rhs = reference_albedo_normal_equations(basis, faces, face, bary, irradiance, weight,
                                                                     target)
    assert normal.shape == (3, 4, 4) and rhs.shape == (3, 4)
    torch.testing.assert_close(normal, expected_normal)
    torch.testing.assert_close(rhs, expected_rhs)
