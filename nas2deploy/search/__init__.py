"""What every gradient search shares: the loop and its run folder, the configuration, the latency
loss and budget controller, op sampling, budget rules, the 0-1 program of budget derivation,
the closed loop, and the interface each space's search implements (``interface.py``)."""
