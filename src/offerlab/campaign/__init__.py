"""The closed campaign loop: plan a budgeted campaign with a holdout and exploration, evaluate what it earned, learn from every past campaign (plan, evaluate, logs, simulate)."""
