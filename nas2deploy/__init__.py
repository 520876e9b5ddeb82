"""nas2deploy: latency-aware neural architecture search that ends in deployable engines.

The importable API mirrors the command line: ``ops`` (operators as OpSpecs), ``nets`` (derived
networks as data), ``spaces`` (search spaces and their registry), ``backends`` (one runner per
runtime and its registry), ``latency`` (lookup tables: profile, predict, validate), ``runs``
(starting and re-opening searches and studies), ``deploy`` (export, check, bench).
"""

__version__ = "0.1.0"
