#!/bin/bash
# Cluster timings on 127.0.0.1 with the stories15m-shaped test model (fp32, random weights):
# node join, a 64-token completion cold and warm, and how long the head takes to drop a node
# that is killed (closed socket) or stopped (missed heartbeats; heartbeat 0.5 s, timeout 3 s).
# The drop times include this script's polling of /admin/status (curl + python, ~0.1 s a poll).
# Usage: scripts/cluster_timings.sh [path/to/thaw]   (default build/apps/thaw)
set -euo pipefail
B=$(realpath "${1:-build/apps/thaw}")
W=$(mktemp -d)
trap 'kill -KILL $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
cd "$W"
ms() { date +%s%3N; }
"$B" make-model --preset stories15m --tokenizer llama2 --seed 1 --dtype fp32 hf >/dev/null 2>&1
"$B" convert hf s15 >/dev/null 2>&1
printf '[http]\nport = 0\n[cluster]\nport = 0\nsecret = "x"\nheartbeat = 0.5\ntimeout = 3\n[[models]]\nname = "s15"\ncheckpoint = "%s/s15"\n' "$W" > head.toml
"$B" head --config head.toml --log-level warn > head.out 2> head.err &
HP=$!
for _ in $(seq 100); do grep -q control head.out && break; sleep 0.1; done
CP=$(grep -o "control 127.0.0.1:[0-9]*" head.out | cut -d: -f2)
HTTP=$(grep -o "http://127.0.0.1:[0-9]*" head.out | cut -d: -f3)
NODE=(--set 'cluster.secret="x"' --set cluster.heartbeat=0.5 --set cluster.timeout=3
      --set 'loader.pool_bytes="256MiB"' --set node.threads=1 --log-level warn)
t0=$(ms)
"$B" node --head "127.0.0.1:$CP" --name a "${NODE[@]}" > a.out 2> a.err &
AP=$!
for _ in $(seq 500); do grep -q joined a.out && break; sleep 0.02; done
echo "node join (process start to 'joined'): $(( $(ms) - t0 )) ms"
"$B" node --head "127.0.0.1:$CP" --name b "${NODE[@]}" > b.out 2> b.err &
BP=$!
for _ in $(seq 500); do grep -q joined b.out && break; sleep 0.02; done
nodes() { curl -s "localhost:$HTTP/admin/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))'; }
req() {
  curl -s -o /dev/null -w "HTTP %{http_code}, %{time_total} s" "localhost:$HTTP/v1/completions" \
    -H 'content-type: application/json' \
    -d '{"model":"s15","prompt":"Once upon a time","max_tokens":64,"ignore_eos":true}'
}
echo "first request (cold start, 64 tokens): $(req)"
echo "second request (warm, 64 tokens): $(req)"
where=$(curl -s "localhost:$HTTP/admin/status" |
  python3 -c 'import json,sys; print([n["name"] for n in json.load(sys.stdin)["nodes"] if n["instances"]][0])')
victim=$AP other=$BP
if [ "$where" = b ]; then victim=$BP other=$AP; fi
t0=$(ms)
kill -KILL "$victim"
for _ in $(seq 500); do [ "$(nodes)" = 1 ] && break; sleep 0.01; done
echo "SIGKILL of node $where until the head lists 1 node: $(( $(ms) - t0 )) ms"
echo "request after the kill (cold start on the other node): $(req)"
t0=$(ms)
kill -STOP "$other"
for _ in $(seq 1000); do [ "$(nodes)" = 0 ] && break; sleep 0.02; done
echo "SIGSTOP of the other node until the head lists 0 nodes: $(( $(ms) - t0 )) ms"
kill -KILL "$other" "$HP" 2>/dev/null || true
