"""Discount uplift: a multi-treatment uplift model and a budgeted, profit-aware discount policy.

Public API: `UpliftModel` (fit / predict_levels / uplift / recommend), `PolicyConfig`, `recommend`,
`choose_levels`, the metrics in `offerlab.uplift.metrics`, the peers in `offerlab.uplift.baselines`.
Submodules import torch lazily only where needed; import them directly (e.g. `offerlab.uplift.policy`).
"""
