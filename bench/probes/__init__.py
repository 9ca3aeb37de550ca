"""One-off probes that find where time goes (not benchmarks, not tests)."""
