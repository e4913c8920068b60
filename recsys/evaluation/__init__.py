"""Ranking metrics and the evaluator that applies them to a model or a baseline."""
