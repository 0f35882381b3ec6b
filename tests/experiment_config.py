"""A small experiment shared by the experiment, plot and notebook tests.

One feature on one rate-limited provider with a 20-second brownout; two retry policies
(immediate retries, and backoff behind a breaker) times two error rates, two replications.
A run takes about 0.1 s.
"""

from __future__ import annotations

from pathlib import Path

SCENARIO = """\
name = "tiny"

[run]
duration = "60s"
seed = 11
timeseries_bin = "5s"

[providers.main]
model = "test/model"
prices = { input = 1.0, output = 4.0 }
rate_limit = { rpm = 900, tpm = 400_000 }
capacity = { slots = 12, queue_limit = 24 }
service = { kind = "tokens", ttft = "0.2s", decode_tps = 100, noise_sigma = 0.2 }
failures = { error_rate = 0.01, midstream_rate = 0.01 }

[[providers.main.incidents]]
kind = "brownout"
start = "20s"
duration = "20s"
error_rate = 0.5

[features.chat]
provider = "main"
policy = "backoff"
arrivals = { kind = "poisson", rate = 8 }
input_tokens = { kind = "fixed", value = 300 }
output_tokens = { kind = "uniform", low = 20, high = 80 }
max_tokens = 100

[policies.backoff]
timeout = "10s"
deadline = "30s"
retry = { kind = "exponential", max_retries = 3, base = "0.2s", cap = "2s", jitter = "full" }
breaker = { window = "count", window_size = 20, minimum_calls = 10, open_duration = "5s", \
half_open_calls = 3 }

[policies.naive]
timeout = "10s"
deadline = "30s"
retry = { kind = "naive", max_retries = 3 }
"""

# Experiment tables go after the scenario: in TOML, keys after a [table] header belong to it.
EXPERIMENT = (
    SCENARIO
    + """
[experiment]
replications = 2

[sweep]
"features.chat.policy" = ["naive", "backoff"]
"providers.main.failures.error_rate" = [0.01, 0.1]
"""
)


def write(folder: Path, text: str = EXPERIMENT, name: str = "exp.toml") -> Path:
    """Write ``text`` as ``folder/name`` and return the path."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
