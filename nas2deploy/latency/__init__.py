"""Latency lookup tables: format and prediction (table), measurement (profile), the device a table
describes (device), fidelity (validate) and calibration (calibration), network summaries."""
