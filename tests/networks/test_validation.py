"""networks.validation: d, AUC and mm / px errors of a regressor, and the mean-shape baseline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from diffface.data.format import FaceDataset
from diffface.networks import FaceRegressor, ModelIdentity
from diffface.networks.losses import shape_and_projections
from diffface.networks.validation import shape_errors, summarize_errors, validate
from diffface.params import ParamNormalizer


class LookupNetwork(nn.Module):
    """Returns the stored parameter vector of the stored image nearest to each input (an oracle);
    records the mode it was called in."""

    def __init__(self, images: torch.Tensor, params: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images.flatten(1).clone())
        self.register_buffer("params", params.clone())
        self.modes: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        index = torch.cdist(images.flatten(1), self.images).argmin(1)
        return self.params[index]


def _regressor(model, images, params):
    layout = model.layout
    normalizer = ParamNormalizer(torch.zeros(layout.network_size), torch.ones(layout.network_size))
    return FaceRegressor(LookupNetwork(images, params), normalizer, layout, ModelIdentity("tiny", "x"), "lookup",
                         {}, images.shape[-1])


def _items(model, make_parameters, count=5, seed=3):
    """Ground-truth parameters, shapes, projections and distinct images of ``count`` faces."""
    params = make_parameters(model, count, seed)
    vertices, projections = shape_and_projections(model, model.layout, params)
    images = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return params, vertices, projections, images


def _batches(images, vertices, projections, sizes):
    out, start = [], 0
    for size in sizes:
        s = slice(start, start + size)
        out.append({"image": images[s], "vertices": vertices[s], "projections": projections[s]})
        start += size
    return out


def _direct_d(shape, gt):
    shape, gt = shape.double().numpy(), gt.double().numpy()
    spread = ((gt - gt.mean(1, keepdims=True)) ** 2).sum((1, 2))
    return 100 * ((shape - gt) ** 2).sum((1, 2)) / spread


def _direct_auc(d, max_d):
    return float(np.mean([max(0.0, 1 - x / max_d) for x in d]))


def test_shape_errors_of_a_translated_shape(tiny_model_data):
    gt = torch.tensor(tiny_model_data.mean_shape, dtype=torch.float64)[None].repeat(2, 1, 1)
    shift = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    errors = shape_errors(gt + shift[:, None], gt)
    torch.testing.assert_close(errors["error_mm"], torch.tensor([5.0, 1.0], dtype=torch.float64))
    spread = ((gt[0] - gt[0].mean(0)) ** 2).sum()
    torch.testing.assert_close(errors["d"], 100 * gt.shape[1] * torch.tensor([25.0, 1.0], dtype=torch.float64) / spread)
    assert torch.equal(shape_errors(gt, gt)["d"], torch.zeros(2, dtype=torch.float64))


def test_summarize_errors():
    d = np.array([0.0, 0.2, 0.4, 3.0])
    out = summarize_errors(d, np.array([1.0, 2.0, 3.0, 6.0]), np.array([0.5, 1.5]), max_d=1.0)
    assert out == pytest.approx({"d_mean": 0.9, "d_median": 0.3, "auc": (1 + 0.8 + 0.6 + 0) / 4,
                                 "error_mm_mean": 3.0, "error_px_mean": 1.0})
    assert "error_px_mean" not in summarize_errors(d, d, None, 1.0)
    assert summarize_errors(d, d, None, max_d=4.0)["auc"] == pytest.approx(1 - 3.6 / 16)


def test_a_perfect_predictor_scores_d_0_and_auc_1(tiny_dataset, make_parameters):
    model = tiny_dataset.model
    params, vertices, projections, images = _items(model, make_parameters)
    regressor = _regressor(model, images, params)
    metrics = validate(regressor, model, _batches(images, vertices, projections, [3, 2]), max_d=1.0)
    assert metrics["samples"] == 5
    assert metrics["d_mean"] == pytest.approx(0, abs=1e-9) and metrics["d_median"] == pytest.approx(0, abs=1e-9)
    assert metrics["auc"] == pytest.approx(1.0)
    assert metrics["error_mm_mean"] == pytest.approx(0, abs=1e-6)
    assert metrics["error_px_mean"] == pytest.approx(0, abs=1e-4)
    # the mean-shape baseline: the model's mean against each ground truth
    base_d = _direct_d(model.mean_shape.expand_as(vertices), vertices)
    assert base_d.min() > 0
    assert metrics["mean_shape_d_mean"] == pytest.approx(base_d.mean(), rel=1e-5)
    assert metrics["mean_shape_auc"] == pytest.approx(_direct_auc(base_d, 1.0), abs=1e-6)
    base_mm = (model.mean_shape - vertices).norm(dim=-1).mean(-1)
    assert metrics["mean_shape_error_mm_mean"] == pytest.approx(float(base_mm.mean()), rel=1e-5)
    assert set(metrics) == {"d_mean", "d_median", "auc", "error_mm_mean", "error_px_mean", "mean_shape_d_mean",
                            "mean_shape_auc", "mean_shape_error_mm_mean", "samples"}


def test_metrics_of_an_imperfect_predictor_match_a_direct_computation(tiny_dataset, make_parameters):
    model = tiny_dataset.model
    params, vertices, projections, images = _items(model, make_parameters)
    layout = model.layout
    wrong = layout.unpack(params.clone())
    g = torch.Generator().manual_seed(1)
    noisy = layout.pack(replace(wrong, alpha_id=wrong.alpha_id + torch.randn(wrong.alpha_id.shape, generator=g),
                                translation=wrong.translation + torch.tensor([2.0, -1.0, 5.0])))
    regressor = _regressor(model, images, noisy)
    batches = _batches(images, vertices, projections, [2, 2, 1])
    max_d = 0.005  # the samples' d lie either side of it: the AUC clips some and not others
    metrics = validate(regressor, model, batches, max_d=max_d)
    predicted, predicted_px = shape_and_projections(model, layout, noisy)
    d = _direct_d(predicted, vertices)
    assert (d < max_d).any() and (d > max_d).any()
    assert metrics["d_mean"] == pytest.approx(d.mean(), rel=1e-4)
    assert metrics["d_median"] == pytest.approx(np.median(d), rel=1e-4)  # over all samples, not per batch
    assert metrics["auc"] == pytest.approx(_direct_auc(d, max_d), abs=1e-5)
    mm = np.linalg.norm(predicted.double().numpy() - vertices.double().numpy(), axis=-1).mean(-1)
    assert metrics["error_mm_mean"] == pytest.approx(mm.mean(), rel=1e-4)
    px = np.linalg.norm(predicted_px.double().numpy() - projections.double().numpy(), axis=-1).mean(-1)
    assert px.mean() > 0.1 and metrics["error_px_mean"] == pytest.approx(px.mean(), rel=1e-4)
    # the translation moves the projections but not the shape (S(p) is in the model frame): the mean-shape
    # baseline is the same as for a perfect predictor
    perfect = validate(_regressor(model, images, params), model, batches, max_d=max_d)
    assert perfect["auc"] == pytest.approx(1.0)
    assert {k: v for k, v in metrics.items() if k.startswith("mean_shape")} == \
        {k: v for k, v in perfect.items() if k.startswith("mean_shape")}


def test_validate_runs_in_eval_mode_and_restores_the_mode(tiny_dataset, make_parameters):
    model = tiny_dataset.model
    params, vertices, projections, images = _items(model, make_parameters, count=2)
    regressor = _regressor(model, images, params).train()
    validate(regressor, model, _batches(images, vertices, projections, [1, 1]))
    assert regressor.network.modes == [False, False] and regressor.training
    regressor.eval()
    validate(regressor, model, _batches(images, vertices, projections, [2]))
    assert not regressor.training


def test_an_empty_split_raises_and_keeps_the_mode(tiny_dataset, make_parameters):
    model = tiny_dataset.model
    params, _, _, images = _items(model, make_parameters, count=2)
    regressor = _regressor(model, images, params).train()
    with pytest.raises(ValueError, match="validation split is empty"):
        validate(regressor, model, [])
    assert regressor.training


def test_validate_on_a_dataset_folder(tiny_dataset):
    """The val split read through FaceDataset and a DataLoader, as training validates."""
    model = tiny_dataset.model
    val = FaceDataset(tiny_dataset.root, "val")
    items = [val[i] for i in range(len(val))]
    images = torch.stack([it["image"] for it in items])
    params = torch.stack([torch.as_tensor(it["params"]) for it in items]).float()
    regressor = _regressor(model, images, params)
    metrics = validate(regressor, model, torch.utils.data.DataLoader(val, batch_size=3), max_d=1.0)
    assert metrics["samples"] == len(val) == 4
    assert metrics["auc"] == pytest.approx(1.0) and metrics["d_mean"] == pytest.approx(0, abs=1e-6)
    assert metrics["error_px_mean"] == pytest.approx(0, abs=1e-3)
    assert metrics["mean_shape_d_mean"] > 0 and 0 <= metrics["mean_shape_auc"] < 1
