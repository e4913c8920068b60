"""Ranking the model against baselines on the validation split, and the HTML report."""
