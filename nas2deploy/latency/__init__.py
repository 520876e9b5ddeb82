"""Latency lookup tables: format and prediction (table), measurement (profile), fidelity (validate)."""
