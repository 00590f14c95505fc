"""Log-normal mixture over the time to the next purchase, with an optional "never again" mass.

The intensity-free temporal point process of Shchur et al. (2020) models each inter-event gap with a
mixture of log-normals whose parameters come from the sequence encoder. We add a cure (defective) mass
`p_never`: the probability that no further purchase comes at all. This is the BG/NBD drop-out idea in
neural form, and it is what lets the model say "this customer has probably gone" from a long open gap:
the conditional survival S(e + k) / S(e) tends to p_never / S(e), which grows with the elapsed time e.

Everything is vectorised torch over arbitrary leading dimensions; times are in days.
"""

from __future__ import annotations

import math

import torch
from torch.special import log_ndtr

LOG_T_MIN = math.log(1e-4)  # bisection bracket for times, in log-days
LOG_T_MAX = math.log(1e6)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class LogNormalMixture:
    """Mixture of K log-normals plus a cure mass; parameters have shape (..., K) and (...)."""

    def __init__(self, logits: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                 never_logit: torch.Tensor | None = None):
        self.log_w = torch.log_softmax(logits, dim=-1)
        self.mu = mu
        self.sigma = log_sigma.exp()
        self.log_sigma = log_sigma
        if never_logit is None:
            never_logit = torch.full(mu.shape[:-1], -float("inf"), dtype=mu.dtype, device=mu.device)
        self.log_p_never = torch.nn.functional.logsigmoid(never_logit)
        self.log_p_event = torch.nn.functional.logsigmoid(-never_logit)

    def unsqueeze(self) -> LogNormalMixture:
        """The same distributions with a new last batch axis, to evaluate (N,) parameters on (N, Q) times."""
        out = LogNormalMixture.__new__(LogNormalMixture)
        out.log_w, out.mu, out.sigma, out.log_sigma = (x.unsqueeze(-2) for x in
                                                        (self.log_w, self.mu, self.sigma, self.log_sigma))
        out.log_p_never, out.log_p_event = self.log_p_never.unsqueeze(-1), self.log_p_event.unsqueeze(-1)
        return out

    # -- densities -------------------------------------------------------------------------------------
    def log_prob(self, t: torch.Tensor) -> torch.Tensor:
        """log density of a purchase exactly `t` days after the last one (includes the 1 - p_never factor)."""
        log_t = torch.log(t.clamp_min(1e-6)).unsqueeze(-1)
        z = (log_t - self.mu) / self.sigma
        comp = -0.5 * z**2 - self.log_sigma - _HALF_LOG_2PI - log_t
        return self.log_p_event + torch.logsumexp(self.log_w + comp, dim=-1)

    def log_survival(self, t: torch.Tensor) -> torch.Tensor:
        """log P(no purchase within `t` days) = log(p_never + (1 - p_never) * sum_k w_k S_k(t))."""
        log_t = torch.log(t.clamp_min(1e-30)).unsqueeze(-1)
        z = (log_t - self.mu) / self.sigma
        log_sf = torch.logsumexp(self.log_w + log_ndtr(-z), dim=-1)
        return torch.logaddexp(self.log_p_never, self.log_p_event + log_sf)

    def survival(self, t: torch.Tensor) -> torch.Tensor:
        return self.log_survival(t).exp()

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.expm1(self.log_survival(t))

    # -- conditional on the time already elapsed --------------------------------------------------------
    def prob_within(self, elapsed: torch.Tensor, k: torch.Tensor | float) -> torch.Tensor:
        """P(purchase within the next `k` days | none in the `elapsed` days since the last one)."""
        k = torch.as_tensor(k, dtype=elapsed.dtype, device=elapsed.device)
        return -torch.expm1(self.log_survival(elapsed + k) - self.log_survival(elapsed))

    def log_p_never_given(self, elapsed: torch.Tensor) -> torch.Tensor:
        """log P(no purchase ever again | none in `elapsed` days): the posterior drop-out probability."""
        return self.log_p_never - self.log_survival(elapsed)

    def quantile_after(self, elapsed: torch.Tensor, q: torch.Tensor | float, iters: int = 40) -> torch.Tensor:
        """Days from now until the next purchase at probability level `q`, given `elapsed` days without one.

        Solves S(elapsed + t) / S(elapsed) = 1 - q by bisection in log-time; returns +inf where the
        never-again mass makes the level unreachable (q above P(any further purchase | elapsed)).
        """
        q = torch.as_tensor(q, dtype=elapsed.dtype, device=elapsed.device)
        target = self.log_survival(elapsed) + torch.log1p(-q.clamp(max=1 - 1e-7))  # log S at the answer
        unreachable = target <= self.log_p_never + 1e-6
        shape = torch.broadcast_shapes(target.shape, elapsed.shape)
        lo = torch.full(shape, LOG_T_MIN, dtype=elapsed.dtype, device=elapsed.device)
        hi = torch.full(shape, LOG_T_MAX, dtype=elapsed.dtype, device=elapsed.device)
        for _ in range(iters):  # fixed iterations over the whole batch: vectorised, no per-row loop
            mid = 0.5 * (lo + hi)
            above = self.log_survival(elapsed + mid.exp()) > target  # survival still too high: go later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        t = (0.5 * (lo + hi)).exp()
        return torch.where(unreachable, torch.full_like(t, float("inf")), t)

    def sample_after(self, elapsed: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact draw of the days until the next purchase given `elapsed` days without one (+inf = never).

        Posterior over {never, component k} given survival to `elapsed`, then a log-normal truncated below
        at `elapsed`, drawn on the survival side (ndtri of small numbers) so far tails stay accurate.
        """
        dt = torch.float64
        log_t = torch.log(elapsed.to(dt).clamp_min(1e-30)).unsqueeze(-1)
        mu, sigma = self.mu.to(dt), self.sigma.to(dt)
        log_sf_k = log_ndtr(-(log_t - mu) / sigma)  # (..., K)
        post = torch.cat([self.log_p_never.to(dt).unsqueeze(-1), self.log_p_event.to(dt).unsqueeze(-1)
                          + self.log_w.to(dt) + log_sf_k], -1)
        k1 = post.shape[-1]
        choice = torch.multinomial(torch.softmax(post.reshape(-1, k1), -1), 1, generator=generator)
        choice = choice.reshape(post.shape[:-1])
        comp = (choice - 1).clamp_min(0).unsqueeze(-1)
        u = torch.rand(choice.shape, generator=generator, dtype=dt, device=mu.device).clamp_min(1e-300)
        log_tail = log_sf_k.gather(-1, comp).squeeze(-1) + torch.log(u)  # log P(Z > z) of the draw
        z = -torch.special.ndtri(log_tail.exp().clamp_min(1e-300))
        t = torch.exp(mu.gather(-1, comp).squeeze(-1) + sigma.gather(-1, comp).squeeze(-1) * z)
        t = torch.maximum(t, elapsed.to(dt)) - elapsed.to(dt)
        t = torch.where(choice == 0, torch.full_like(t, float("inf")), t)
        return t.to(elapsed.dtype)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unconditional draw of the next gap (elapsed = 0), exactly: component, then log-normal (+inf = never)."""
        shape = self.mu.shape[:-1]
        comp = torch.multinomial(self.log_w.reshape(-1, self.log_w.shape[-1]).exp(), 1, generator=generator)
        comp = comp.reshape(shape)
        mu = self.mu.gather(-1, comp.unsqueeze(-1)).squeeze(-1)
        sigma = self.sigma.gather(-1, comp.unsqueeze(-1)).squeeze(-1)
        eps = torch.randn(shape, generator=generator, dtype=mu.dtype, device=mu.device)
        t = torch.exp(mu + sigma * eps)
        never = torch.rand(shape, generator=generator, dtype=mu.dtype, device=mu.device) < self.log_p_never.exp()
        return torch.where(never, torch.full_like(t, float("inf")), t)

    def mean_finite(self) -> torch.Tensor:
        """E[gap | a further purchase comes] = sum_k w_k exp(mu_k + sigma_k^2 / 2)."""
        return torch.exp(torch.logsumexp(self.log_w + self.mu + 0.5 * self.sigma**2, dim=-1))


def censored_gap_nll(dist: LogNormalMixture, gap: torch.Tensor, censored: torch.Tensor,
                     elapsed_start: torch.Tensor | None = None) -> torch.Tensor:
    """Per-step negative log-likelihood of a gap: -log f(gap) if observed, -log S(gap) if right-censored.

    `elapsed_start` (left truncation) conditions on no purchase during the first days of the gap, so a
    validation window that starts mid-gap scores only what happens inside it: - log(f(g) / S(e0)).
    """
    ll = torch.where(censored, dist.log_survival(gap), dist.log_prob(gap))
    if elapsed_start is not None:
        ll = ll - dist.log_survival(elapsed_start)
    return -ll
