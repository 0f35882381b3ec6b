"""The workload: arrival processes, token sizes, and the per-feature request source."""
