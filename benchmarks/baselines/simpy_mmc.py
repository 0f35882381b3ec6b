"""Hand-written SimPy M/M/c model: the "plain SimPy" baseline for the llmtraffic benchmark.

Written the way the SimPy documentation and tutorials do it: a source process emits Poisson
arrivals and every customer is its own generator process that requests a shared
``simpy.Resource``. Per-customer records (arrival, service start, end) are kept in Python
lists so the comparison with models that keep records is like for like. Random variates are
drawn in numpy batches up front, so the baseline does not pay for scalar numpy calls.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Iterable
from typing import Any

import numpy as np
import simpy

from llmtraffic.theory import mmc_mean_wait


def _customer(
    env: simpy.Environment,
    server: simpy.Resource,
    service_time: float,
    arrivals: list[float],
    starts: list[float],
    ends: list[float],
) -> Generator[simpy.Event, Any, None]:
    arrived = env.now
    with server.request() as req:
        yield req
        started = env.now
        yield env.timeout(service_time)
    arrivals.append(arrived)
    starts.append(started)
    ends.append(env.now)


def _source(
    env: simpy.Environment,
    server: simpy.Resource,
    interarrivals: Iterable[float],
    service_times: Iterable[float],
    arrivals: list[float],
    starts: list[float],
    ends: list[float],
) -> Generator[simpy.Event, Any, None]:
    for gap, service_time in zip(interarrivals, service_times, strict=True):
        yield env.timeout(gap)
        env.process(_customer(env, server, service_time, arrivals, starts, ends))


def run(lam: float, mu: float, c: int, n: int, seed: int) -> dict[str, float]:
    """Simulate ``n`` customers through an M/M/c queue and return throughput figures.

    The model runs until every one of the ``n`` arrivals has been served (the queue drains).
    The returned dict has ``customers`` (number completed), ``mean_wait`` (mean time in queue
    over all customers, no warm-up removed) and ``wall_s`` (wall time of drawing the variates,
    building and running the model; the final mean is not included).
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # Drawn inside the timed region because Ciw samples its variates during the run.
    interarrivals = rng.exponential(1.0 / lam, n).tolist()
    service_times = rng.exponential(1.0 / mu, n).tolist()
    arrivals: list[float] = []
    starts: list[float] = []
    ends: list[float] = []
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=c)
    env.process(_source(env, server, interarrivals, service_times, arrivals, starts, ends))
    env.run()
    wall_s = time.perf_counter() - t0

    mean_wait = float(np.mean(np.subtract(starts, arrivals)))
    return {"customers": len(ends), "mean_wait": mean_wait, "wall_s": wall_s}


if __name__ == "__main__":
    lam, mu, c = 9.0, 1.0, 10
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    result = run(lam, mu, c, n, seed=1)
    theory = mmc_mean_wait(lam, mu, c)
    print(result)
    print(f"customers/s = {result['customers'] / result['wall_s']:,.0f}")
    rel = result["mean_wait"] / theory - 1.0
    print(f"mean wait {result['mean_wait']:.4f} vs Erlang C {theory:.4f} ({rel:+.1%})")
    if abs(rel) > 0.10:
        print("WARNING: mean wait is more than 10% from Erlang C", file=sys.stderr)
