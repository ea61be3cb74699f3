from __future__ import annotations

import numpy as np
import pytest
import torch

from flowclas_ros.model.config import FlowConfig
from flowclas_ros.model.flow import ActNorm, CouplingSubnet, DiagonalGaussian, build_flow


def _randomised_flow(channels: int, steps: int, seed: int = 0) -> torch.nn.Module:
    flow = build_flow(channels, FlowConfig(steps=steps), seed=seed).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in flow.parameters():
            if param.dtype.is_floating_point:  # skip the integer permutations
                param.add_(0.3 * torch.randn(param.shape, generator=gen, dtype=param.dtype))
    return flow


def test_flow_is_invertible_and_reverse_logdet_negates():
    flow = _randomised_flow(channels=6, steps=4)
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64)
    z, log_det = flow(x)
    assert z.shape == x.shape and log_det.shape == (3,)
    assert not torch.allclose(z, x)  # a real transformation, not the identity
    x_back, log_det_rev = flow(z, rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(log_det_rev, -log_det)


@pytest.mark.parametrize("height,width", [(2, 2), (1, 3)])
def test_flow_logdet_matches_autograd_jacobian(height, width):
    # The flow is built with placeholder spatial dims (1, 1); the log-det must
    # still be right for other sizes (FrEIA 0.2's ActNorm alone would not be).
    flow = _randomised_flow(channels=4, steps=3, seed=1)
    x = torch.randn(1, 4, height, width, dtype=torch.float64)

    def f(flat):
        return flow(flat.view(1, 4, height, width))[0].reshape(-1)

    jacobian = torch.autograd.functional.jacobian(f, x.reshape(-1))
    _, expected = torch.linalg.slogdet(jacobian)
    _, log_det = flow(x)
    torch.testing.assert_close(log_det[0], expected, atol=1e-8, rtol=1e-8)


def test_couplings_start_as_identity_and_permutations_are_seeded():
    flow = build_flow(8, FlowConfig(steps=2), seed=3).eval()
    x = torch.randn(2, 8, 3, 3)
    z, log_det = flow(x)
    # ActNorm (zeros) and zero-init couplings: only the permutations act.
    perms = [m.perm for m in flow.module_list if hasattr(m, "perm")]
    torch.testing.assert_close(z, x[:, perms[0]][:, perms[1]])
    torch.testing.assert_close(log_det, torch.zeros(2))
    again = build_flow(8, FlowConfig(steps=2), seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(perms, [m.perm for m in again.module_list if hasattr(m, "perm")])
    )


def test_build_flow_leaves_numpy_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    build_flow(4, FlowConfig(steps=2), seed=0)
    assert np.random.rand() == expected


def test_actnorm_initialises_from_data_only_in_training():
    norm = ActNorm([(3, 1, 1)])
    x = torch.randn(4, 3, 5, 5) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + 7.0
    norm.eval()
    out, _ = norm([x])
    torch.testing.assert_close(out[0], x)  # untouched in eval
    norm.train()
    out, log_det = norm([x])
    y = out[0]
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(log_det, (norm.scale.sum() * 25).expand(4))


def test_coupling_subnet_output_is_zero_at_init():
    net = CouplingSubnet(5, 10, kernel_size=3, hidden_ratio=0.5)
    assert torch.count_nonzero(net(torch.randn(2, 5, 4, 4))) == 0


def test_diagonal_gaussian_log_prob_matches_torch_distributions():
    base = DiagonalGaussian(3)
    with torch.no_grad():
        base.mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        base.log_sigma.copy_(torch.tensor([0.1, -0.3, 0.7]))
    z = torch.randn(2, 3, 4, 4)
    ref = torch.distributions.Normal(base.mean.view(1, 3, 1, 1), base.log_sigma.exp().view(1, 3, 1, 1))
    torch.testing.assert_close(base.log_prob(z), ref.log_prob(z))
