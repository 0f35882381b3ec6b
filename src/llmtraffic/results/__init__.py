"""Records of a run (requests, attempts, events, time series), sinks, metrics and loading."""
