"""Differentiable search: supernet, expected latency, sampling and derivation."""
