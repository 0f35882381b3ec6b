"""The client side: retry decisions, waits, circuit breaker, retry budget, and the per-feature
client that carries decisions out in simulated time."""
