"""nas2deploy: latency-aware neural architecture search that ends in deployable engines.

The importable API mirrors the CLI: ``ops`` (operators as OpSpecs), ``spaces`` (search spaces),
``arch`` (derived networks as data), ``backends`` (one Runner per runtime), ``latency``
(lookup tables: profile, predict, validate).
"""

__version__ = "0.1.0"
