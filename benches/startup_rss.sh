#!/bin/bash
# Start-up time and resident memory of one server run, as benches/run measures them:
# copies DATA to /tmp/rss-TAG, serves it, polls /readyz every 10 ms (start-up), reads VmRSS
# when ready and 0.3 s later (and /proc/PID/smaps_rollup), runs benches/run's three heavy
# queries, reads VmRSS right after and 2 s later, stops the server (SIGTERM) and removes
# the copy. Alternate two builds' binaries under the build lock for paired figures:
#   flock -o /tmp/fg-build.lock benches/startup_rss.sh BIN DATA TAG [1|0: run the queries]
bin=$1; src=$2; tag=$3; q=${4:-1}
d=/tmp/rss-$tag
rm -rf $d; cp -r $src $d
export FEEDGRAPH__QUERY__MAX_ROWS=50000000 FEEDGRAPH__QUERY__MAX_WORK=4000000000000 \
  FEEDGRAPH__QUERY__MAX_MEMORY_BYTES=1000000000000 \
  FEEDGRAPH__QUERY__TIMEOUT_MS=600000 FEEDGRAPH__RATE_LIMIT__ENABLED=false
export RUST_LOG=${RUST_LOG:-error}
t0=$(date +%s.%N)
"$bin" --data-dir "$d" serve --bind 127.0.0.1:0 > $d.out 2>$d.err &
pid=$!
base=""
for _ in $(seq 1 2000); do
  base=$(head -1 "$d.out" 2>/dev/null | sed -n 's/^feedgraph listening on //p')
  [ -n "$base" ] && break
  sleep 0.005
done
until curl -sf "$base/readyz" > /dev/null; do sleep 0.01; done
t1=$(date +%s.%N)
st=$(echo "$t1 - $t0" | bc)
r0=$(grep VmRSS /proc/$pid/status | awk '{print $2}')
sleep 0.3
r1=$(grep VmRSS /proc/$pid/status | awk '{print $2}')
anon=$(grep '^Anonymous' /proc/$pid/smaps_rollup | awk '{print $2}')
cp /proc/$pid/smaps_rollup $d.smaps_rollup
r2=-; r3=-
if [ "$q" = 1 ]; then
token=$("$bin" --data-dir "$d" token --org bench --sub bench --role admin)
for qq in \
  "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id, count(f)" \
  "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) WHERE a2.id = 'base_model' RETURN f.id, a1.id" \
  "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter), (f)-[:FEEDBACK_FOR]->(a2:Adapter) WHERE a1.id <> a2.id WITH a1.id AS x, a2.id AS y, count(f) AS shared WHERE shared > 10 RETURN x, y, shared ORDER BY shared DESC"; do
  curl -sf -X POST "$base/api/v1/llm/graph/query" -H "Authorization: Bearer $token" \
    -H "Content-Type: application/json" -d "{\"query\": \"$qq\"}" > /dev/null
done
r2=$(grep VmRSS /proc/$pid/status | awk '{print $2}')
sleep 2
r3=$(grep VmRSS /proc/$pid/status | awk '{print $2}')
fi
kill -TERM $pid; wait $pid
echo "$tag startup_s=$st rss_ready=$r0 rss_0.3s=$r1 anon=$anon rss_queries=$r2 rss_settled=$r3 load=$(cut -d' ' -f1 /proc/loadavg)"
rm -rf $d
