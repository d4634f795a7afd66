#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: install, build, start `thaw serve` (which makes
# the demo model on first use: stories15M's shape, deterministic random weights, the real Llama 2
# tokenizer; the words it writes are nonsense), and ask it for completions with curl, plain and
# streamed. The server stops at the end; `scripts/demo.sh --keep` leaves it running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${THAW_BUILD_DIR:-build}
port=${THAW_PORT:-8000}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHAW_TESTS=OFF
cmake --build "$build" --target thaw
thaw="$build/apps/thaw"

"$thaw" serve --port "$port" &
server=$!
trap '[ -n "${server:-}" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "thaw serve exited" >&2; exit 1; }
  sleep 0.2
done

set -x
curl -s "http://127.0.0.1:$port/v1/models"
echo
curl -s "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "stories15m", "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}'
echo
curl -sN "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "stories15m", "messages": [{"role": "user", "content": "Tell me a story"}],
       "max_tokens": 16, "stream": true}'
{ set +x; } 2>/dev/null
if [ "${1:-}" = "--keep" ]; then
  echo "thaw serve is running on http://127.0.0.1:$port (Ctrl-C stops it)"
  wait "$server"
fi
