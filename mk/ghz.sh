#!/usr/bin/env bash
# The independent load test of `make bench-ghz` (mk/ghz.mk): ghz through the
# CNSS adapter of a running `jisr dev`, then ghz through an independent raw
# NATS two-hop relay (`jisr raw-relay`: front, relay and responder as
# separate processes on a plain NATS server of their own) carrying the same
# request, metadata and reply sizes, in the same run; writes both figures
# and their ratio to $GHZ_OUT. A measurement, not a test: nothing is
# asserted about speed.
set -euo pipefail

JISR=${JISR:-bin/jisr}
GHZ=${GHZ:-bin/ghz}
C=${GHZ_CONCURRENCY:-128}
DURATION=${GHZ_DURATION:-10s}
WARMUP=${GHZ_WARMUP:-2s}
OUT=${GHZ_OUT:-bench/results/ghz.md}
CALL=jisr.civilregistry.v1.CivilRegistry/GetPerson

command -v jq >/dev/null || { echo "bench-ghz: needs jq (apt-get install jq)" >&2; exit 1; }
started=$(date +%s)
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

# wait_for FILE PATTERN SECONDS: until a line of FILE matches PATTERN.
wait_for() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "bench-ghz: no '$2' in $1 after $3 s:" >&2
	tail -20 "$1" >&2
	return 1
}

# run_ghz LABEL ADDR: a warm-up, then the measured run; its JSON report and
# the load average before and after go to $tmp/LABEL.*.
run_ghz() {
	local label=$1 addr=$2
	"$GHZ" --insecure --call "$CALL" -d "{\"eid\":\"$EID\"}" -m "$MD" -c "$C" -z "$WARMUP" -O json "$addr" >/dev/null
	cut -d' ' -f1-3 /proc/loadavg >"$tmp/$label.load"
	"$GHZ" --insecure --call "$CALL" -d "{\"eid\":\"$EID\"}" -m "$MD" -c "$C" -z "$DURATION" -O json "$addr" >"$tmp/$label.json"
	cut -d' ' -f1-3 /proc/loadavg >>"$tmp/$label.load"
	echo "bench-ghz: $label: $(jq -r '"\(.rps | floor) q/s, \(.statusCodeDistribution | tostring)"' "$tmp/$label.json")" >&2
}

# 1. The full path: jisr dev, ghz through the CNSS adapter.
echo "bench-ghz: starting jisr dev (seeds 10,000 citizens per backend on its first run)" >&2
"$JISR" --data "$tmp/var" --log-level warn dev --any-port --console "" >"$tmp/dev.log" 2>&1 &
pids+=($!)
for ((i = 0; i < 3000; i++)); do
	if jq -e .endpoints "$tmp/var/demo.json" >/dev/null 2>&1; then break; fi
	if ! kill -0 "${pids[0]}" 2>/dev/null; then tail -30 "$tmp/dev.log" >&2; exit 1; fi
	sleep 0.1
done
demo=$tmp/var/demo.json
ADAPTER=$(jq -r '.endpoints["adapter/cnss"]' "$demo")
BACKEND=$(jq -r '.endpoints["backend/civil-registry"]' "$demo")
tok='[.tokens[] | select(.consumer == "cnss" and .provider == "civil-registry" and .service == "jisr.civilregistry.v1.CivilRegistry" and (.methods | index("GetPerson")))][0]'
EID=$(jq -r "$tok.citizen" "$demo")
PURPOSE=$(jq -r "$tok.purpose" "$demo")
TOKEN=$(jq -r "$tok.token" "$demo")
if [ -z "$EID" ] || [ "$EID" = null ]; then
	echo "bench-ghz: no cnss → civil-registry GetPerson token in demo.json" >&2
	exit 1
fi
MD=$(jq -cn --arg p "$PURPOSE" --arg t "$TOKEN" '{"jisr-purpose": $p, "jisr-consent": $t}')
"$JISR" raw-relay probe --adapter "$ADAPTER" --backend "$BACKEND" --eid "$EID" --purpose "$PURPOSE" --token "$TOKEN" >"$tmp/sizes.json"
REPLY=$(jq .reply "$tmp/sizes.json")
PROVIDER_REPLY=$(jq .provider_reply "$tmp/sizes.json")
run_ghz full "$ADAPTER"
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
pids=()

# 2. The baseline: plain NATS, front → relay → responder, one process each.
"$JISR" raw-relay nats >"$tmp/nats.log" 2>&1 &
pids+=($!)
wait_for "$tmp/nats.log" '^url ' 10
URL=$(sed -n 's/^url //p' "$tmp/nats.log")
"$JISR" raw-relay responder --url "$URL" --size "$PROVIDER_REPLY" >"$tmp/responder.log" 2>&1 &
pids+=($!)
"$JISR" raw-relay relay --url "$URL" --size "$REPLY" >"$tmp/relay.log" 2>&1 &
pids+=($!)
"$JISR" raw-relay front --url "$URL" >"$tmp/front.log" 2>&1 &
pids+=($!)
wait_for "$tmp/responder.log" 'ready' 10
wait_for "$tmp/relay.log" 'ready' 10
wait_for "$tmp/front.log" '^listening ' 10
run_ghz raw "$(sed -n 's/^listening //p' "$tmp/front.log")"

# 3. The report.
took=$(($(date +%s) - started))
mkdir -p "$(dirname "$OUT")"
row() { # LABEL NAME
	jq -r --arg name "$2" --arg load "$(awk 'NR == 1 { a = $0 } NR == 2 { b = $0 } END { print a " → " b }' "$tmp/$1.load")" \
		'"| \($name) | \(.rps | floor) | \(.average / 1e6 * 100 | floor / 100) | \((.latencyDistribution // [])[] | select(.percentage == 50) | .latency / 1e6 * 100 | floor / 100) | \((.latencyDistribution // [])[] | select(.percentage == 99) | .latency / 1e6 * 100 | floor / 100) | \(.count) | \(.statusCodeDistribution | to_entries | map("\(.key) \(.value)") | join(", ")) | \($load) |"' "$tmp/$1.json"
}
full=$(jq .rps "$tmp/full.json")
raw=$(jq .rps "$tmp/raw.json")
{
	echo "# Independent load test: ghz, full path against a raw NATS two-hop relay"
	echo
	echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(uname -sm), ghz ${GHZ_VERSION:-$("$GHZ" --version 2>&1)}, \`make bench-ghz\` (mk/ghz.sh), run time ${took} s."
	echo
	echo "ghz --insecure --call $CALL, c=$C, ${WARMUP} warm-up then ${DURATION} measured, one citizen and its consent token (from \`jisr dev\`'s demo.json), metadata jisr-purpose and jisr-consent ($(printf %s "$MD" | wc -c) B as JSON). Request $(jq .request "$tmp/sizes.json") B; reply ${REPLY} B after minimisation, ${PROVIDER_REPLY} B from the provider's backend: the relay and the responder answer with GetPersonResponse messages of exactly these sizes."
	echo
	echo "- Full path: ghz → the CNSS adapter of \`jisr dev\` (one process: embedded NATS with mTLS, gateway with consent check and durable audit, both adapters, reference backends) → gateway → provider adapter → civil-registry backend (SQLite)."
	echo "- Raw baseline: ghz → \`jisr raw-relay front\` (gRPC → NATS request) → \`relay\` → \`responder\`, each its own process, on a plain NATS server of its own (\`jisr raw-relay nats\`, no TLS), no checks and none of jisr's libraries (cmd/internal/rawrelay)."
	echo
	echo "| path | q/s | mean ms | p50 ms | p99 ms | calls | status | load average (1, 5, 15 min) before → after |"
	echo "|---|---:|---:|---:|---:|---:|---|---|"
	row full "full path (jisr dev, CNSS adapter)"
	row raw "raw NATS two-hop relay"
	echo
	echo "Ratio full / raw: **$(jq -n --argjson f "$full" --argjson r "$raw" '$f / $r * 100 | floor')%**."
	echo
	echo "q/s is ghz's rate over the measured part. The calls still in flight when ghz stops at the end of the duration (about c of them) are cancelled and counted as Unavailable. The load average is the whole machine's, other users included."
} >"$OUT"
cat "$OUT"
