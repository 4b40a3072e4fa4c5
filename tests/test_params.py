import dataclasses
from dataclasses import replace

import pytest
import torch

from diffface.params import ParamLayout, ParamNormalizer


def test_method_layout_sizes():
    layout = ParamLayout(80, 29, 80)
    assert layout.network_size == 118
    assert layout.full_size == 118 + 80 + 27
    assert ParamLayout(63, 6, 0).network_size == 78
    s = layout.slices
    assert s["alpha_id"] == slice(0, 80) and s["alpha_exp"] == slice(80, 109)
    assert s["translation"] == slice(109, 112) and s["angles"] == slice(112, 115)
    assert s["focal"] == slice(115, 116) and s["principal_point"] == slice(116, 118)
    assert s["beta"] == slice(118, 198) and s["sh"] == slice(198, 225)
    names = layout.names()
    assert len(names) == 118 and names[109:118] == ["t_x", "t_y", "t_z", "phi_pitch", "gamma_yaw", "theta_roll",
                                                   "focal", "p_x", "p_y"]
    assert len(layout.names(include_fitting=True)) == 225


@pytest.mark.parametrize("include_fitting", [False, True])
def test_pack_unpack_roundtrip(include_fitting):
    layout = ParamLayout(7, 3, 4)
    p = torch.randn(5, layout.full_size if include_fitting else layout.network_size)
    params = layout.unpack(p)
    assert params.alpha_id.shape == (5, 7) and params.focal.shape == (5, 1)
    assert (params.sh is not None) == include_fitting
    torch.testing.assert_close(layout.pack(params, include_fitting=include_fitting), p)
    torch.testing.assert_close(params.alpha_exp, p[:, 7:10])


def test_unpack_rejects_wrong_length_and_pack_missing_group():
    layout = ParamLayout(7, 3, 4)
    with pytest.raises(ValueError, match=r"\(B, 19\)"):
        layout.unpack(torch.zeros(2, 20))
    params = layout.unpack(torch.zeros(2, layout.network_size))
    with pytest.raises(ValueError, match="beta"):
        layout.pack(params, include_fitting=True)
    with pytest.raises(ValueError, match="focal"):
        layout.pack(replace(params, focal=torch.zeros(2, 2)))


def test_sh_coefficients_view_is_coefficient_by_channel():
    layout = ParamLayout(2, 1, 1)
    params = replace(layout.zeros(1), sh=torch.arange(27.0)[None])
    sh = params.sh_coefficients
    assert sh.shape == (1, 9, 3)
    assert sh[0, 0].tolist() == [0.0, 9.0, 18.0]  # DC of R, G, B


def test_face_parameters_helpers():
    layout = ParamLayout(2, 1, 1)
    params = layout.zeros(4)
    sub = params.index(slice(1, 3))
    assert sub.batch_size == 2 and sub.sh.shape == (2, 27)
    assert params.to(torch.float64).alpha_id.dtype == torch.float64


def test_normalizer_roundtrip_and_constant_entries():
    samples = torch.randn(200, 6) * torch.tensor([1.0, 10, 100, 0.1, 5, 0]) + 3
    norm = ParamNormalizer.from_samples(samples)
    z = norm(samples)
    torch.testing.assert_close(z[:, :5].mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :5].std(0), torch.ones(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.denormalize(z), samples, atol=1e-4, rtol=1e-6)
    assert norm.std[5] == 1.0  # a constant entry is not divided by zero
    assert set(norm.state_dict()) == {"mean", "std"}
    with pytest.raises(ValueError, match="p_normalized"):
        norm.denormalize(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least 2"):
        ParamNormalizer.from_samples(torch.zeros(1, 6))


def test_face_parameters_are_frozen():
    params = ParamLayout(2, 1, 1).zeros(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.sh = None
    assert replace(params, sh=None).sh is None and params.sh is not None
