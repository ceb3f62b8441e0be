"""Speed benchmarks of cifar-ray; run `python -m benchmarks.bench` from the repository root (see BENCHMARKS.md)."""
