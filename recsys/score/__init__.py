"""Batch scoring: top-N per user with a broadcast model, published as one table partition."""
