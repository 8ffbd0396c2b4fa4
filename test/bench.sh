#!/usr/bin/env bash
# make bench: drives a freshly started hostvol through full volume cycles
# (CreateVolume, NodeStage, NodePublish, NodeUnpublish, NodeUnstage,
# DeleteVolume) with the load tool, at E=10 and E=5000 pre-existing volumes,
# with C=1 and C=8 workers, R runs each, and prints the median of each
# phase's p50/p99 over the runs plus the E=5000/E=10 ratio.
#
# Needs root (real bind mounts). Knobs: N (cycles per run, 1000), R (runs,
# 3), EXISTING ("10 5000"), WORKERS ("1 8"), BENCH_DIR (a directory on the
# disk to measure, default a new one under /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
R=${R:-3}
EXISTING=${EXISTING:-"10 5000"}
WORKERS=${WORKERS:-"1 8"}
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (every cycle makes a real bind mount)" >&2
  exit 1
fi

go build -o bin/hostvol ./cmd/hostvol
go build -o bin/hostvol-load ./test/load
work=${BENCH_DIR:-$(mktemp -d /var/tmp/hostvol-bench.XXXXXX)}
out="$work/results"
mkdir -p "$out"
declare -A driver_pid=()
cleanup() {
  for pid in "${driver_pid[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; fi
  done
  # Anything a failed run left mounted under the work directory.
  findmnt -rn -o TARGET | { grep "^$work/" || true; } | sort -r | xargs -r -n1 umount -l
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

start_driver() { # $1: key, $2: run directory
  mkdir -p "$2/pool" "$2/state" "$2/targets"
  bin/hostvol --endpoint "unix://$2/csi.sock" --state-dir "$2/state" \
    --pool "default=$2/pool" --node-id bench-node -v 1 2>"$2/driver.log" &
  driver_pid[$1]=$!
  for _ in $(seq 100); do
    bin/hostvol client --endpoint "unix://$2/csi.sock" info >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: driver did not start; see $2/driver.log" >&2
  exit 1
}

echo "bench: N=$N cycles per run, R=$R runs, existing volumes: $EXISTING, workers: $WORKERS, disk: $(df -h --output=source,fstype "$work" | tail -1)"
# One driver per E, all running at once, each with its own pool and state
# on the same disk, populated with E volumes (untimed) that stay for every
# measured run. Runs are interleaved (E=10, E=5000, E=10, ...) so that drift
# in the machine's speed over time hits every E alike.
for e in $EXISTING; do
  start_driver "$e" "$work/e$e"
  bin/hostvol-load --endpoint "unix://$work/e$e/csi.sock" --n 1 --c 8 --e "$e" --keep-existing \
    --name-prefix "existing" --target-dir "$work/e$e/targets" >"$out/populate-e$e.txt"
done
for r in $(seq "$R"); do
  for c in $WORKERS; do
    for e in $EXISTING; do
      run="$work/e$e"
      bin/hostvol-load --endpoint "unix://$run/csi.sock" --n "$N" --c "$c" \
        --name-prefix "e$e-c$c-r$r" --target-dir "$run/targets" >"$out/e$e-c$c-r$r.txt"
      echo "  run $r E=$e C=$c: $(grep '^summary' "$out/e$e-c$c-r$r.txt")"
    done
  done
done

# Median over runs of each phase's p50, p99 and ops/s.
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"} else if (NR%2) {print a[(NR+1)/2]} else {printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}}'; }
field() { # $1 file, $2 phase, $3 key
  awk -v ph="phase=$2" -v k="$3" '$1==ph {for (i=2;i<=NF;i++) {split($i,kv,"="); if (kv[1]==k) print kv[2]}}' "$1"
}
echo
echo "| E | C | phase | p50 ms | p99 ms | ops/s |"
echo "|---|---|---|---|---|---|"
for e in $EXISTING; do
  for c in $WORKERS; do
    for ph in create stage publish unpublish unstage delete cycle; do
      p50=$(for r in $(seq "$R"); do field "$out/e$e-c$c-r$r.txt" "$ph" p50_ms; done | median)
      p99=$(for r in $(seq "$R"); do field "$out/e$e-c$c-r$r.txt" "$ph" p99_ms; done | median)
      ops=$(for r in $(seq "$R"); do field "$out/e$e-c$c-r$r.txt" "$ph" ops_per_s; done | median)
      echo "| $e | $c | $ph | $p50 | $p99 | $ops |"
      echo "$e $c $ph $p50" >>"$out/p50.txt"
    done
  done
done
set -- $EXISTING
lo=$1; hi=${!#}
echo
echo "Ratio of median p50 latency, E=$hi over E=$lo (1.00 = no growth with the volume count):"
for c in $WORKERS; do
  for ph in create publish unpublish delete cycle; do
    a=$(awk -v e="$lo" -v c="$c" -v p="$ph" '$1==e && $2==c && $3==p {print $4}' "$out/p50.txt")
    b=$(awk -v e="$hi" -v c="$c" -v p="$ph" '$1==e && $2==c && $3==p {print $4}' "$out/p50.txt")
    awk -v a="$a" -v b="$b" -v c="$c" -v p="$ph" 'BEGIN {printf "  C=%s %-9s %.2fx\n", c, p, (a>0 ? b/a : 0)}'
  done
done
