"""Grad-CAM++ against a numpy computation of the paper's formula; saliency and Spearman against hand values."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from kdforge.errors import ShapeMismatchError, UnknownNameError
from kdforge.metrics import find_spatial_layer, gradcam_plus_plus, gradient_saliency, rank_correlation


class ConvGap(nn.Module):
    """conv (same size) -> ReLU -> global average pool -> linear: d score / dA is w[c, k] / (h * w)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_gradcam_pp_matches_numpy_formula():
    model = ConvGap().eval()
    x = torch.randn(2, 1, 5, 5)
    cams = gradcam_plus_plus(model, model, x, "act")
    with torch.no_grad():
        acts = model.act(model.conv(x)).double().numpy()  # (N, C, 5, 5)
        target = model(x).argmax(1).numpy()
    w = model.head.weight.detach().double().numpy()
    for i in range(2):
        a = acts[i]
        g = np.broadcast_to((w[target[i]] / 25.0)[:, None, None], a.shape)  # constant gradient per channel
        denom = 2 * g**2 + a.sum(axis=(1, 2))[:, None, None] * g**3
        alpha = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0)
        weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
        expected = np.maximum((weights[:, None, None] * a).sum(axis=0), 0)
        np.testing.assert_allclose(cams[i].numpy(), expected, rtol=1e-5, atol=1e-7)


def test_gradcam_pp_explains_the_requested_class_and_upsamples():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(3, 1, 8, 8)
    assert find_spatial_layer(model, model, x) == "2"
    cams = gradcam_plus_plus(model, model, x, "2", target=torch.tensor([0, 1, 2]))
    assert cams.shape == (3, 8, 8) and (cams >= 0).all()
    model.requires_grad_(False)  # a frozen teacher still gets maps
    assert torch.allclose(gradcam_plus_plus(model, model, x, "2", target=torch.tensor([0, 1, 2])), cams)
    with pytest.raises(UnknownNameError, match="unknown layer 'conv'"):
        gradcam_plus_plus(model, model, x, "conv")


def test_find_spatial_layer_prefers_block_and_none_for_mlp():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())])
            self.pool = nn.Identity()
            self.head = nn.Linear(2 * 6 * 6, 2)

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return self.head(self.pool(x).flatten(1))

    net = Net()
    assert find_spatial_layer(net, net, torch.randn(1, 1, 6, 6)) == "blocks.0"
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    assert find_spatial_layer(mlp, mlp, torch.randn(1, 1, 6, 6)) is None


def test_gradient_saliency_of_linear_model_is_abs_weight():
    lin = nn.Linear(6, 2)
    forward = lambda x: lin(x.flatten(1))  # noqa: E731
    x = torch.randn(2, 1, 2, 3)
    sal = gradient_saliency(forward, x, target=torch.tensor([1, 0]))
    assert torch.allclose(sal[0], lin.weight[1].abs().view(2, 3))
    assert torch.allclose(sal[1], lin.weight[0].abs().view(2, 3))


def test_rank_correlation_matches_scipy_with_ties_and_nan_for_constant():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (5, 3, 3), generator=g).double()  # many ties
    b = torch.randint(0, 4, (5, 3, 3), generator=g).double()
    rho = rank_correlation(a, b)
    for i in range(5):
        assert rho[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-12)
    assert rank_correlation(a[:1], a[:1]).item() == pytest.approx(1.0)
    assert rank_correlation(a[:1], -a[:1]).item() == pytest.approx(-1.0)
    assert torch.isnan(rank_correlation(torch.zeros(1, 4), torch.arange(4.0).view(1, 4))).all()
    with pytest.raises(ShapeMismatchError, match="rank_correlation"):
        rank_correlation(torch.zeros(1, 4), torch.zeros(1, 5))
