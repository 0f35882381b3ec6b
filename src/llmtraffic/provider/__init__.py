"""Providers: rate limiters, service times, billing and the serving endpoint."""
