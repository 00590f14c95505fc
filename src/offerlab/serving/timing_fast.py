"""The timing model's answers for a serving batch with few, large operations.

Why: for one customer the library path (`TimingPredictor`) is dominated by fixed per-call costs, not
arithmetic: building a transactions frame and factorising it, then ~40 small torch evaluations of the
log-normal mixture (three horizons, five count-head horizons, the drop-out belief, and a 24-step
bisection per quantile, each once per ensemble member). Here the histories go straight from request
arrays into the sequence builder's numpy core, and every question is a vectorised evaluation of each
member's mixture parameters, taken once (`offerlab.timing.mixture.EnsembleMixture`). The count head
gets its inputs from the library's own `count_features`, fed these probabilities.
tests/test_serving_timing_fast.py checks every answer against the library path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from offerlab.data.sequences import sequences_from_arrays
from offerlab.serving.fastpath import HistoryArrays, category_codes
from offerlab.timing.mixture import EnsembleMixture


def timing_state(predictor, h: HistoryArrays):
    """`TimingPredictor.encode` of a serving batch, each open gap measured at the request's own as-of instant."""
    from offerlab.timing.data import build_examples

    latest = int(h.as_of.max())
    cat, vocab = category_codes(h.category, np.ones(len(h.ts), dtype=bool), predictor.categories or None)
    amount = h.amount if getattr(predictor, "uses_amount", True) else None  # a dates-only model ignores amounts
    seqs = sequences_from_arrays(h.codes, np.asarray(h.ids, dtype=object), h.ts, amount, cat, vocab, latest,
                                 same_day=predictor.same_day)
    ex, _ = build_examples(seqs, pd.Timestamp(latest), predictor.stats, use_calendar=predictor.use_calendar,
                           age_inputs=predictor.age_inputs)
    last = ex.offsets[1:] - 1
    # the batch was built as of the latest instant; every request's open gap ends at its own
    own = h.as_of / 86_400e9
    ex.target_gap[last] = np.maximum(own - ex.abs_day[last], 0.0).astype(np.float32)
    with torch.inference_mode():
        return predictor.encode_examples(ex)


class MixtureAnswers(EnsembleMixture):
    """`EnsembleMixture` of a serving batch, plus the expected count, whose head reads these probabilities.

    Quacks like the `TimingPredictor` methods `count_features` uses (`stats`, `prob_within`, `prob_never`).
    """

    def __init__(self, predictor, state) -> None:
        super().__init__(predictor, state)
        self.predictor, self.state, self.stats = predictor, state, predictor.stats

    def expected_counts(self, horizon: float, n_samples: int) -> np.ndarray:
        """The count head's closed form on inputs built from these probabilities; else the library's simulation."""
        from offerlab.timing.counts import count_features

        head = getattr(self.predictor, "count_head", None)
        with torch.inference_mode():
            if head is None:
                return self.predictor.simulate_counts(self.state, horizon, n_samples, seed=0)
            x = torch.from_numpy(count_features(self, self.state))
            return head.expected_count(x, float(horizon)).double().numpy()
