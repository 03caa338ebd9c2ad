"""The serving benchmark suite behind `make bench` (see docs/benchmarks.md and run_all.py)."""
