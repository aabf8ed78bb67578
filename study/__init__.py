"""ProRes study package: Progressive Residual Warmup (arXiv 2603.05369) as a reproducible study."""

__version__ = "0.1.0"
