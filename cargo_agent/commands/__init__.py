"""cargo-agent's own commands: `--status`, `--doctor`, `--install-shim` and the `--dry-run` plan."""
