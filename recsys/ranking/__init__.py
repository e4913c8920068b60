"""How a ranked list is made and measured, shared by training, evaluation and scoring.

`topk` holds the kernels (seen items excluded in place, an exact two-level top-k, the per-
category cap), `metrics` the metric definitions, `exposure` the beyond-accuracy ones (how a
set of lists spreads over the catalogue), `evaluator` the batched evaluation of a score
function on held-out pairs. A leaf: it imports no stage.
"""
