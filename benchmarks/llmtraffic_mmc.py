"""llmtraffic on the M/M/c queue the baselines simulate: Poisson arrivals, exponential service,
c slots, no failures, no timeouts, every record kept (requests, attempts, events, time series).
"""

from __future__ import annotations

import time

import numpy as np

from llmtraffic import Simulation, scenario_from_dict


def run(lam: float, mu: float, c: int, n: int, seed: int) -> dict[str, float]:
    """Simulate about ``n`` customers (arrivals over n / lam seconds); same dict as the baselines.

    ``wall_s`` covers building the scenario and running it, records included.
    """
    t0 = time.perf_counter()
    scenario = scenario_from_dict(
        {
            "name": "mmc",
            "run": {"duration": n / lam, "seed": seed, "timeseries_bin": 60.0},
            "providers": {
                "server": {
                    "model": "mmc",
                    "prices": {"input": 0.0, "output": 0.0},
                    "capacity": {"slots": c, "queue_limit": "unbounded"},
                    "service": {"kind": "exponential", "mean": 1.0 / mu},
                }
            },
            "policies": {"none": {"timeout": "inf"}},
            "features": {
                "customers": {
                    "provider": "server",
                    "arrivals": {"kind": "poisson", "rate": lam},
                    "input_tokens": {"kind": "fixed", "value": 1},
                    "output_tokens": {"kind": "fixed", "value": 1},
                }
            },
        }
    )
    result = Simulation(scenario).run()
    wall_s = time.perf_counter() - t0
    waits = result.tables["attempts"].column("queue_wait").to_numpy()
    return {
        "customers": float(result.summary["requests"]),
        "mean_wait": float(np.mean(waits)),
        "wall_s": wall_s,
    }
