"""Next-basket peers, each scoring every (customer, item) of a customer x catalogue matrix from the history.

- G-TopFreq: the items in the most baskets, the same for everyone.
- P-TopFreq: the customer's own items by how many of its baskets hold them (ties: more recent first), then the
  global order (Li et al., "A Next Basket Recommendation Reality Check", the strongest simple repeat baseline).
- TIFU-KNN (Hu et al., SIGIR 2020), written from the paper (no maintained package): a customer's baskets, oldest
  first, fall into groups of `group_size`; a basket's multi-hot vector is weighted `r_b ** (baskets after it in its
  group)` inside its group and a group `r_g ** (groups after it)`, each average normalised; the prediction blends
  the customer's vector with the mean of its `k` nearest neighbours' (Euclidean): `alpha u + (1 - alpha) mean`.
  Its `alpha` and `k` are chosen on the customers' second-to-last baskets (the grid in `TIFU_GRID`).
- Buy It Again (Bhagat et al., KDD 2018), its modified Poisson-gamma model: an item's repeat-customer probability
  times the customer's chance of buying it again within its usual basket gap, with the rate's gamma prior
  fitted per item to the repeat buyers (method of moments) and updated by the customer's own count and exposure;
  items the customer never bought follow in global order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from offerlab.timing.basket import Lines, _baskets

TIFU_GRID = {"alpha": (0.3, 0.6, 0.9), "k": (50, 300)}


def basket_matrix(L: Lines, mask: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Multi-hot (basket x item) of the masked lines, with each basket's customer and time."""
    o = L.order[mask]
    codes, inv = np.unique(o, return_inverse=True)
    m = sp.csr_matrix((np.ones(len(o)), (inv, L.item[mask])), shape=(len(codes), len(L.items)))
    m.data[:] = 1.0
    first = np.unique(inv, return_index=True)[1]
    return m, L.cust[mask][first], L.t[mask][first]


def counts(L: Lines, mask: np.ndarray) -> sp.csr_matrix:
    """(customer x item): how many of the customer's baskets hold the item."""
    m = sp.csr_matrix((np.ones(int(mask.sum())), (L.cust[mask], L.item[mask])), shape=(len(L.customers), len(L.items)))
    m.sum_duplicates()
    return m


def g_topfreq(L: Lines, mask: np.ndarray) -> np.ndarray:
    pop = np.asarray(counts(L, mask).sum(axis=0)).ravel()
    return np.broadcast_to(pop / max(pop.max(), 1.0), (len(L.customers), len(L.items))).copy()


def p_topfreq(L: Lines, mask: np.ndarray) -> np.ndarray:
    """Personal frequency, ties by recency, then the global order below every own item."""
    c = counts(L, mask).toarray()
    last = np.zeros_like(c)
    np.maximum.at(last, (L.cust[mask], L.item[mask]), L.t[mask] - L.t.min() + 1.0)
    glob = g_topfreq(L, mask)[0]
    recency = last / max(last.max(), 1.0)
    return np.where(c > 0, 2.0 + c + 0.5 * recency, glob)


def tifu_vectors(L: Lines, mask: np.ndarray, group_size: int = 7, r_b: float = 0.9, r_g: float = 0.7) -> np.ndarray:
    """The customers' TIFU vectors (customer x item, dense)."""
    m, bc, _ = basket_matrix(L, mask)
    n_b = np.bincount(bc, minlength=len(L.customers))
    pos = np.arange(len(bc)) - np.searchsorted(bc, bc, side="left")  # basket index within its customer, oldest 0
    n_groups = np.ceil(n_b / group_size).astype(int)
    group = pos // group_size
    size = np.minimum(group_size, n_b[bc] - group * group_size)  # the last group may be short
    within = size - 1 - pos % group_size
    w = r_b ** within / size * r_g ** (n_groups[bc] - 1 - group) / np.maximum(n_groups[bc], 1)
    agg = sp.csr_matrix((w, (bc, np.arange(len(bc)))), shape=(len(L.customers), len(bc)))
    return np.asarray((agg @ m).todense())


def neighbour_means(u: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """For each k, the mean vector of every customer's k nearest neighbours (Euclidean, itself excluded); one
    neighbour search for the largest k, in row chunks so memory stays ~ chunk x k x items."""
    kmax = int(min(max(ks), len(u) - 1))
    out = {k: np.zeros_like(u) for k in ks}
    if kmax < 1:
        return {k: u.copy() for k in ks}
    nn = NearestNeighbors(n_neighbors=kmax + 1, algorithm="brute").fit(u)
    step = max(1, 4_000_000 // max(kmax * u.shape[1], 1))
    for s in range(0, len(u), step):
        idx = nn.kneighbors(u[s: s + step], return_distance=False)[:, 1:]
        csum = np.cumsum(u[idx], axis=1)  # (rows, kmax, items)
        for k in ks:
            kk = min(k, kmax)
            out[k][s: s + step] = csum[:, kk - 1] / kk
    return out


def tifu_knn(L: Lines, mask: np.ndarray, alpha: float = 0.9, k: int = 300, vectors: np.ndarray | None = None,
             means: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """alpha x the customer's TIFU vector + (1 - alpha) x the mean of its k nearest neighbours' vectors."""
    u = tifu_vectors(L, mask) if vectors is None else vectors
    m = (means or neighbour_means(u, (k,)))[k]
    return alpha * u + (1 - alpha) * m


def buy_it_again(L: Lines, mask: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """The modified Poisson-gamma repeat score (see the module docstring), then the global order."""
    n_c, n_i = len(L.customers), len(L.items)
    cnt = counts(L, mask).toarray()
    first = np.full((n_c, n_i), np.inf)
    np.minimum.at(first, (L.cust[mask], L.item[mask]), L.t[mask])
    exposure = np.where(np.isfinite(first), np.maximum(cut[:, None] - first, 1.0), np.nan)
    bought = cnt > 0
    repeat = cnt > 1
    rcp = repeat.sum(0) / np.maximum(bought.sum(0), 1)
    rate = np.where(repeat, (cnt - 1) / exposure, np.nan)
    mean = np.nanmean(np.where(repeat, rate, np.nan), axis=0)
    var = np.nanvar(np.where(repeat, rate, np.nan), axis=0)
    glob_mean = np.nanmean(rate) if np.isfinite(rate).any() else 1 / 30
    mean = np.where(np.isfinite(mean), mean, glob_mean)
    var = np.where(np.isfinite(var) & (var > 0), var, mean**2)
    a, b = mean**2 / var, mean / var  # gamma(shape a, rate b) with the repeat buyers' mean and variance
    lam = (a[None, :] + np.maximum(cnt - 1, 0)) / (b[None, :] + np.nan_to_num(exposure, nan=0.0))
    gap = _baskets(L, mask, n_c)["gap"]
    gap = np.where(np.isnan(gap), np.nanmedian(gap) if np.isfinite(gap).any() else 30.0, gap)
    score = rcp[None, :] * (1.0 - np.exp(-lam * gap[:, None]))
    glob = g_topfreq(L, mask)[0]
    return np.where(bought, 1.0 + score, glob * 0.999)
