"""cargo-agent: a cargo front end that lets many agents share one build host."""

__version__ = "0.1.0"
