#!/usr/bin/env bash
# Run examples/serve/app.py's real retry code through the fault battery and read the verdict:
# what a CI job does (docs/serve.md). Arguments go to the app (e.g. --no-retries).
set -euo pipefail
out=runs/serve-battery
# A free port, so that parallel jobs on one machine do not collide.
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# --wait-for-traffic: the battery's schedule starts with the application's first request.
llmtraffic serve examples/serve/battery.toml --port "$port" --out "$out" --force --wait-for-traffic &
server=$!
# Whatever happens below, the server does not outlive the job.
trap 'kill -TERM "$server" 2>/dev/null || true' EXIT
# Wait until it answers (it prints its base URLs when it does).
python - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("llmtraffic serve did not start")
PY
# The application, unchanged: the SDK reads its base URL and key from the environment.
OPENAI_BASE_URL="http://127.0.0.1:$port/llm/v1" OPENAI_API_KEY=test python examples/serve/app.py "$@"
kill -TERM "$server"   # the server writes its log as it stops
wait "$server"
python examples/serve/verdict.py "$out"
