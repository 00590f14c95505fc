"""Purchase timing: when will a customer buy again, and what (neural temporal point process).

Library entry points:

    from offerlab.timing.train import load_config, fit_timing
    cfg = load_config("configs/timing/cdnow.yaml")
    predictor, info = fit_timing(transactions, "1997-09-30", cfg)
    answers = predictor.predict_frame(transactions, "1997-09-30 23:59", horizon_days=90)
    # p_within_{7,30,90}d, p_no_purchase_90d, p_never, q10/median/q90_days, median_next_date,
    # expected_purchases_90d, top{1,2,3}_category/_prob — one row per customer
    # expected counts and P(any purchase) over long horizons come from the count head (counts.py):
    predictor.expected_counts(state, 273), predictor.prob_any(state, 273)  # state = predictor.encode(tx, as_of)

CLI: `offerlab train timing --config ...`, `offerlab bench timing --dataset cdnow|synth --out ...`.
"""
