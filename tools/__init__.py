"""User-facing tools: the CLI, benchmarks and test helpers."""
