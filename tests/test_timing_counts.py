"""Count head: closed forms against hand-computed values, a proper count distribution, learning from windows."""

import math

import numpy as np
import pytest
import torch

from offerlab.timing.counts import CountHead, CountHeads

PI, LAM, MU, NU = 0.6, 0.05, 0.01, 0.002  # P(active), purchases/day while active, end-of-activity rate, dormant rate


def fixed_head(pi: float = PI, lam: float = LAM, mu: float = MU, nu: float = NU, r: float = 1e4) -> CountHead:
    """A head whose every customer has the same known parameters (r large = Poisson)."""
    head = CountHead(3)
    with torch.no_grad():
        last = head.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([math.log(pi / (1 - pi)), math.log(lam) + 4.0, math.log(mu) + 6.0]))
        head.log_nu.fill_(math.log(nu))
        head.log_r.fill_(math.log(r))
    return head.eval()


def test_expected_count_and_p_any_match_hand_values():
    head, x, h = fixed_head(), torch.zeros(2, 3), 100.0
    life = (1 - math.exp(-MU * h)) / MU  # expected active days within the horizon
    want_count = PI * (LAM * life + NU * (h - life)) + (1 - PI) * NU * h
    assert head.expected_count(x, h)[0].item() == pytest.approx(want_count, rel=1e-5)
    assert want_count == pytest.approx(2.0205, abs=1e-3)
    # P(no purchase | active) = e^{-(lam+mu)h} + mu e^{-nu h} (1 - e^{-(lam+mu-nu)h}) / (lam+mu-nu) for Poisson counts
    k = LAM + MU - NU
    p0_active = math.exp(-(LAM + MU) * h) + MU * math.exp(-NU * h) * (1 - math.exp(-k * h)) / k
    want_any = 1 - (PI * p0_active + (1 - PI) * math.exp(-NU * h))
    assert head.prob_any(x, h)[0].item() == pytest.approx(want_any, abs=2e-4)


def test_count_heads_average_their_members_and_survive_saving(tmp_path):
    from offerlab.timing.predict import _head_blob, _head_from_blob

    heads = CountHeads([fixed_head(pi=0.6), fixed_head(pi=0.2)])
    x, h = torch.zeros(2, 3), 100.0
    want = (fixed_head(pi=0.6).expected_count(x, h) + fixed_head(pi=0.2).expected_count(x, h)) / 2
    np.testing.assert_allclose(heads.expected_count(x, h).detach().numpy(), want.detach().numpy(), rtol=1e-6)
    p_any = (fixed_head(pi=0.6).prob_any(x, h) + fixed_head(pi=0.2).prob_any(x, h)) / 2
    np.testing.assert_allclose(heads.prob_any(x, h).detach().numpy(), p_any.detach().numpy(), rtol=1e-6)
    torch.save(_head_blob(heads), tmp_path / "h.pt")
    again = _head_from_blob(torch.load(tmp_path / "h.pt", weights_only=False))
    assert isinstance(again, CountHeads) and len(again.heads) == 2
    np.testing.assert_allclose(again.expected_count(x, h).detach().numpy(), want.detach().numpy(), rtol=1e-6)


def test_window_counts_form_a_distribution_with_the_closed_form_mean():
    head = fixed_head(r=2.0)  # over-dispersed
    n = torch.arange(0, 400, dtype=torch.float32)
    x, days = torch.zeros(len(n), 3), torch.full((len(n),), 91.0)
    pmf = head._mixture_logpmf(x, n, days).exp()
    assert pmf.sum().item() == pytest.approx(1.0, abs=1e-3)
    assert (pmf * n).sum().item() == pytest.approx(head.expected_count(x[:1], 91.0).item(), rel=2e-3)


def test_head_learns_rates_from_windows():
    """Customers whose activity is visible in one feature: the fitted head's expected counts track the truth."""
    rng = np.random.default_rng(0)
    n = 2000
    f = rng.normal(size=(n, 3)).astype(np.float32)
    lam = 0.02 * np.exp(0.8 * f[:, 0])
    days = rng.choice([30.0, 60.0, 90.0], n).astype(np.float32)
    counts = rng.poisson(lam * days).astype(np.float32)
    torch.manual_seed(0)
    head = CountHead(3, hidden=8)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    x, c, d = torch.from_numpy(f), torch.from_numpy(counts), torch.from_numpy(days)
    for _ in range(150):
        opt.zero_grad()
        head.window_nll(x, c, d).backward()
        opt.step()
    with torch.no_grad():
        pred = head.expected_count(x, 60.0).numpy()
    truth = lam * 60.0
    assert np.corrcoef(pred, truth)[0, 1] > 0.95
    assert abs(pred.mean() / truth.mean() - 1) < 0.1
