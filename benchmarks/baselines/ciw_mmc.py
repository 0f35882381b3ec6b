"""Ciw M/M/c model: the Ciw baseline for the llmtraffic benchmark.

Uses Ciw's documented API only (``ciw.create_network``, ``ciw.Simulation``,
``simulate_until_max_customers``). Ciw keeps a data record per customer itself; the mean wait
is computed from ``Q.get_all_records()`` after the timed run.
"""

from __future__ import annotations

import sys
import time

import ciw

from llmtraffic.theory import mmc_mean_wait


def run(lam: float, mu: float, c: int, n: int, seed: int) -> dict[str, float]:
    """Simulate an M/M/c queue in Ciw until ``n`` customers have completed service.

    The returned dict has ``customers`` (number of service records), ``mean_wait`` (mean time
    in queue over those customers, no warm-up removed) and ``wall_s`` (wall time of building
    and running the model; collecting the records afterwards is not included).
    """
    t0 = time.perf_counter()
    ciw.seed(seed)
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=lam)],
        service_distributions=[ciw.dists.Exponential(rate=mu)],
        number_of_servers=[c],
    )
    q = ciw.Simulation(network)
    # "Complete" counts customers that reached the exit node after service; with no baulking
    # or reneging it is the same as "Finish".
    q.simulate_until_max_customers(n, method="Complete")
    wall_s = time.perf_counter() - t0

    records = q.get_all_records()
    mean_wait = sum(r.waiting_time for r in records) / len(records)
    return {"customers": len(records), "mean_wait": mean_wait, "wall_s": wall_s}


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
