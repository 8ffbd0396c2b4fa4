#!/usr/bin/env bash
# make bench: drives freshly started hostvol drivers with the load tool
# (hack/load) and prints medians over several runs. Three modes, MODE="dir
# loop snapshot" by default (all, in that order); MODE=dir, MODE=loop or
# MODE=snapshot runs one. The snapshot mode is in the default list because
# it adds only about 70 s (all four methods, three rounds) on a 2-core machine.
#
# dir: full cycles of directory volumes (CreateVolume, NodeStage,
# NodePublish, NodeUnpublish, NodeUnstage, DeleteVolume) at E=10 and E=5000
# pre-existing volumes, with C=1 and C=8 workers, R runs each; prints the
# median of each phase's p50/p99 over the runs plus the E=5000/E=10 ratio.
#
# loop: 1 GiB ext4 loop volumes (--param type=loop), C=1, against the raw
# floor: the same node work done directly (sparse image, the same mkfs,
# losetup, mount, bind mount, and back; hostvol-load --floor) on the same
# disk. R rounds, each one hostvol run and one floor run of N cycles, in
# alternating order; prints the median over the rounds of each run's p50 of
# up (create+stage+publish), down (unpublish+unstage+delete), cycle and each
# step, hostvol beside the floor, and the ratio hostvol/floor.
#
# snapshot: snapshot and restore of a 1 GiB volume holding 512 MiB of
# incompressible data, for each method, beside a plain copy of the same
# data on the same pool (hostvol-load --snapshot). One driver with three
# pools, each a filesystem of its own on a sparse image in the work
# directory: btrfs with quotas (directory volume: subvolume snapshot), XFS
# with reflink=1 (ext4 loop volume, staged and published: FICLONE under
# FIFREEZE) and ext4 (background copy of an ext4 loop volume, staged and
# unpublished; and of a directory volume). R rounds, interleaved across
# the methods; prints the median over the rounds of snapshot (first
# CreateSnapshot to ready_to_use), restore (CreateVolume from the snapshot)
# and the plain copy (cp, then syncfs), and snapshot/copy.
#
# Needs root (real mounts, loop devices). Knobs: MODE ("dir loop
# snapshot"), N (cycles per run: 1000 dir, 50 loop), R (runs: 3 dir, 5
# loop, 3 snapshot), EXISTING ("10 5000", dir), WORKERS ("1 8", dir),
# LOOP_SIZE (1Gi), LOOP_FS (ext4), SNAP_SIZE (1Gi), SNAP_FILL (512Mi),
# SNAP_METHODS ("btrfs reflink copy copy-dir"), BENCH_DIR (a directory on
# the disk to measure, default a new one under /var/tmp; kept if given).
# Exit status 1 if any run had errors.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-"dir loop snapshot"}
EXISTING=${EXISTING:-"10 5000"}
WORKERS=${WORKERS:-"1 8"}
LOOP_SIZE=${LOOP_SIZE:-1Gi}
LOOP_FS=${LOOP_FS:-ext4}
SNAP_SIZE=${SNAP_SIZE:-1Gi}
SNAP_FILL=${SNAP_FILL:-512Mi}
SNAP_METHODS=${SNAP_METHODS:-"btrfs reflink copy copy-dir"}
for m in $MODE; do
  case $m in
    dir | loop | snapshot) ;;
    *) echo "bench: MODE must list some of dir, loop and snapshot, got \"$MODE\"" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (every cycle makes real mounts)" >&2
  exit 1
fi

go build -o bin/hostvol ./cmd/hostvol
go build -o bin/hostvol-load ./hack/load
work=${BENCH_DIR:-$(mktemp -d /var/tmp/hostvol-bench.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd -P)
declare -A driver_pid=()
failed=0

stop_drivers() {
  for key in "${!driver_pid[@]}"; do
    pid=${driver_pid[$key]}
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; fi
    unset "driver_pid[$key]"
  done
}
cleanup() {
  stop_drivers
  # Anything a failed run left mounted or attached under the work directory.
  findmnt -rn -o TARGET | { grep "^$work/" || true; } | sort -r | xargs -r -n1 umount -l
  losetup -l -n -O NAME,BACK-FILE | awk -v w="$work/" 'index($2, w) == 1 {print $1}' | xargs -r -n1 losetup -d
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

start_driver() { # $1: key, $2: run directory, then --pool flags (default: one pool, "default=$2/pool")
  local key=$1 dir=$2
  shift 2
  [ $# -gt 0 ] || set -- --pool "default=$dir/pool"
  mkdir -p "$dir/pool" "$dir/state" "$dir/targets"
  bin/hostvol --endpoint "unix://$dir/csi.sock" --state-dir "$dir/state" \
    "$@" --node-id bench-node -v 1 2>"$dir/driver.log" &
  driver_pid[$key]=$!
  for _ in $(seq 100); do
    bin/hostvol client --endpoint "unix://$dir/csi.sock" info >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: driver did not start; see $dir/driver.log" >&2
  exit 1
}

# load OUT ARGS...: one hostvol-load run, its report in OUT. A run with
# errors is reported and remembered (exit status 1 at the end), not fatal.
load() {
  local file=$1
  shift
  local rc=0
  bin/hostvol-load "$@" >"$file" 2>"$file.err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "bench: hostvol-load $* exited $rc; see $file and $file.err:" >&2
    grep -E '^(error|summary)' "$file" >&2 || true
    tail -5 "$file.err" >&2
  fi
}

# Median of the numbers on stdin ("-" if none).
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "-"} else if (NR%2) {print a[(NR+1)/2]} else {printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}}'; }
field() { # $1 file, $2 phase, $3 key
  awk -v ph="phase=$2" -v k="$3" '$1==ph {for (i=2;i<=NF;i++) {split($i,kv,"="); if (kv[1]==k) print kv[2]}}' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a+0 > 0 && b != "-") printf "%.2f", b/a; else printf "-"}'; }

bench_dir() {
  local N=${N:-1000} R=${R:-3}
  # The bench pools are plain directories, which cannot limit a directory
  # volume's size: the class accepts that (as it did before size limits).
  local DIR_PARAM=sizeLimit=optional
  local out="$work/results"
  mkdir -p "$out"
  rm -f "$out/p50.txt"
  echo "bench dir: N=$N cycles per run, R=$R runs, existing volumes: $EXISTING, workers: $WORKERS, disk: $(df -h --output=source,fstype "$work" | tail -1)"
  # One driver per E, all running at once, each with its own pool and state
  # on the same disk, populated with E volumes (untimed) that stay for every
  # measured run. Runs are interleaved (E=10, E=5000, E=10, ...) so that drift
  # in the machine's speed over time hits every E alike.
  for e in $EXISTING; do
    start_driver "$e" "$work/e$e"
    load "$out/populate-e$e.txt" --endpoint "unix://$work/e$e/csi.sock" --n 1 --c 8 --e "$e" --keep-existing \
      --param "$DIR_PARAM" --name-prefix "existing" --target-dir "$work/e$e/targets"
  done
  for r in $(seq "$R"); do
    for c in $WORKERS; do
      for e in $EXISTING; do
        run="$work/e$e"
        load "$out/e$e-c$c-r$r.txt" --endpoint "unix://$run/csi.sock" --n "$N" --c "$c" --param "$DIR_PARAM" \
          --name-prefix "e$e-c$c-r$r" --target-dir "$run/targets"
        echo "  run $r E=$e C=$c: $(grep '^summary' "$out/e$e-c$c-r$r.txt")"
      done
    done
  done
  stop_drivers

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
  # shellcheck disable=SC2086 # split into one word per E
  set -- $EXISTING
  local lo=$1 hi=${!#}
  echo
  echo "Ratio of median p50 latency, E=$hi over E=$lo (1.00 = no growth with the volume count):"
  for c in $WORKERS; do
    for ph in create publish unpublish delete cycle; do
      a=$(awk -v e="$lo" -v c="$c" -v p="$ph" '$1==e && $2==c && $3==p {print $4}' "$out/p50.txt")
      b=$(awk -v e="$hi" -v c="$c" -v p="$ph" '$1==e && $2==c && $3==p {print $4}' "$out/p50.txt")
      awk -v a="$a" -v b="$b" -v c="$c" -v p="$ph" 'BEGIN {printf "  C=%s %-9s %.2fx\n", c, p, (a>0 ? b/a : 0)}'
    done
  done
}

bench_loop() {
  local N=${N:-50} R=${R:-5}
  local run="$work/loop" out="$work/results-loop"
  mkdir -p "$out" "$run/floor-pool" "$run/floor-targets"
  start_driver loop "$run"
  local dev_hv dev_floor
  dev_hv=$(stat -c '%d' "$run/pool")
  dev_floor=$(stat -c '%d' "$run/floor-pool")
  if [ "$dev_hv" != "$dev_floor" ]; then
    echo "bench: the driver's pool and the floor's are on different filesystems" >&2
    exit 1
  fi
  local hv=(--endpoint "unix://$run/csi.sock" --param type=loop --size "$LOOP_SIZE" --fs-type "$LOOP_FS" --c 1
    --target-dir "$run/targets")
  local floor=(--floor --size "$LOOP_SIZE" --fs-type "$LOOP_FS" --c 1 --pool-dir "$run/floor-pool"
    --target-dir "$run/floor-targets")
  echo "bench loop: $LOOP_SIZE $LOOP_FS loop volumes, N=$N cycles per run, C=1, R=$R rounds of hostvol and the floor" \
    "(alternating order), disk: $(df -h --output=source,fstype "$run/pool" | tail -1)"
  # Warm-up, not measured: page cache for the tools, the driver's first calls.
  load "$out/warmup-hostvol.txt" "${hv[@]}" --n 3 --name-prefix warm
  load "$out/warmup-floor.txt" "${floor[@]}" --n 3 --name-prefix warm
  for r in $(seq "$R"); do
    order="hostvol floor"
    [ $((r % 2)) -eq 1 ] || order="floor hostvol"
    for who in $order; do
      if [ "$who" = hostvol ]; then
        load "$out/hostvol-r$r.txt" "${hv[@]}" --n "$N" --name-prefix "loop-r$r"
      else
        load "$out/floor-r$r.txt" "${floor[@]}" --n "$N" --name-prefix "floor-r$r"
      fi
      printf '  round %s %-7s up p50 %8s ms  down p50 %8s ms  %s\n' "$r" "$who" \
        "$(field "$out/$who-r$r.txt" up p50_ms)" "$(field "$out/$who-r$r.txt" down p50_ms)" \
        "$(grep '^summary' "$out/$who-r$r.txt" | cut -d' ' -f2-4)"
    done
  done
  stop_drivers

  med() { # $1 who, $2 phase, $3 key: median over the rounds
    for r in $(seq "$R"); do field "$out/$1-r$r.txt" "$2" "$3"; done | median
  }
  echo
  echo "Median over $R rounds of each run's p50 (and p90), ms; floor = the same work without a driver:"
  echo
  echo "| phase | hostvol p50 | floor p50 | hostvol/floor | hostvol p90 | floor p90 |"
  echo "|---|---|---|---|---|---|"
  for ph in up down cycle create stage publish unpublish unstage delete; do
    a=$(med floor "$ph" p50_ms)
    b=$(med hostvol "$ph" p50_ms)
    echo "| $ph | $b | $a | $(ratio "$a" "$b")x | $(med hostvol "$ph" p90_ms) | $(med floor "$ph" p90_ms) |"
  done
  echo
  echo "Floor steps (median p50 ms): create = image $(med floor image p50_ms) + mkfs $(med floor mkfs p50_ms);" \
    "stage = attach $(med floor attach p50_ms) + mount $(med floor mount p50_ms); publish = bind $(med floor bind p50_ms);" \
    "unpublish = unbind $(med floor unbind p50_ms); unstage = umount $(med floor umount p50_ms) + detach $(med floor detach p50_ms);" \
    "delete = remove $(med floor remove p50_ms)"
  echo
  echo "Per round (p50 ms):"
  echo "| round | hostvol up | floor up | up ratio | hostvol down | floor down | down ratio |"
  echo "|---|---|---|---|---|---|---|"
  : >"$out/ratios.txt"
  for r in $(seq "$R"); do
    hu=$(field "$out/hostvol-r$r.txt" up p50_ms) fu=$(field "$out/floor-r$r.txt" up p50_ms)
    hd=$(field "$out/hostvol-r$r.txt" down p50_ms) fd=$(field "$out/floor-r$r.txt" down p50_ms)
    echo "| $r | $hu | $fu | $(ratio "$fu" "$hu")x | $hd | $fd | $(ratio "$fd" "$hd")x |"
    echo "$(ratio "$fu" "$hu") $(ratio "$fd" "$hd")" >>"$out/ratios.txt"
  done
  local up down rup rdown
  up=$(ratio "$(med floor up p50_ms)" "$(med hostvol up p50_ms)")
  down=$(ratio "$(med floor down p50_ms)" "$(med hostvol down p50_ms)")
  rup=$(awk '{print $1}' "$out/ratios.txt" | median)
  rdown=$(awk '{print $2}' "$out/ratios.txt" | median)
  echo
  echo "hostvol/floor, ratio of the medians above: up ${up}x, down ${down}x (target: within 1.3x)"
  echo "hostvol/floor, median of the per-round ratios (less sensitive to drift between rounds): up ${rup}x, down ${rdown}x"
}

# snap_pool FS DIR [mkfs args...]: a filesystem of its own for the snapshot
# bench: a sparse image DIR/pool-FS.img, attached to a loop device
# (remembered in snap_dev for the release), mounted at DIR/FS.
declare -a snap_dev=()
snap_pool() {
  local fs=$1 dir=$2
  shift 2
  local img="$dir/pool-$fs.img" mnt="$dir/$fs" dev
  truncate -s 4G "$img"
  "mkfs.$fs" "$@" "$img" >/dev/null
  dev=$(losetup --find --show "$img")
  snap_dev+=("$dev")
  mkdir -p "$mnt"
  mount -t "$fs" "$dev" "$mnt"
  mkdir -p "$mnt/bench-copy"
}

bench_snapshot() {
  local R=${R:-3}
  local run="$work/snapshot" out="$work/results-snapshot"
  mkdir -p "$run" "$out"
  for tool in mkfs.btrfs btrfs mkfs.xfs mkfs.ext4; do
    command -v "$tool" >/dev/null || { echo "bench: MODE=snapshot needs $tool" >&2; exit 1; }
  done
  snap_pool btrfs "$run" -q -f
  btrfs quota enable "$run/btrfs"
  btrfs quota rescan -w "$run/btrfs" >/dev/null
  snap_pool xfs "$run" -q -f -K -m reflink=1
  snap_pool ext4 "$run" -F -q -m 0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1
  start_driver snapshot "$run" --pool "btrfs=$run/btrfs" --pool "xfs=$run/xfs" --pool "ext4=$run/ext4"
  local common=(--endpoint "unix://$run/csi.sock" --snapshot --size "$SNAP_SIZE" --fill "$SNAP_FILL"
    --target-dir "$run/targets" --timeout 5m)
  declare -A args=(
    [btrfs]="--param pool=btrfs --copy-dir $run/btrfs/bench-copy --baseline tree"
    [reflink]="--param pool=xfs --param type=loop --fs-type ext4 --copy-dir $run/xfs/bench-copy --baseline image"
    [copy]="--param pool=ext4 --param type=loop --fs-type ext4 --copy-dir $run/ext4/bench-copy --baseline image --snapshot-from staged"
    [copy-dir]="--param pool=ext4 --param sizeLimit=optional --copy-dir $run/ext4/bench-copy --baseline tree --snapshot-from staged"
  )
  for m in $SNAP_METHODS; do
    [ -n "${args[$m]:-}" ] || { echo "bench: SNAP_METHODS: unknown method $m (btrfs, reflink, copy, copy-dir)" >&2; exit 2; }
  done
  echo "bench snapshot: $SNAP_SIZE volumes holding $SNAP_FILL, methods: $SNAP_METHODS, R=$R rounds (interleaved)," \
    "pools: 4G sparse images on $(df -h --output=source,fstype "$run" | tail -1), load: $(cut -d' ' -f1-3 /proc/loadavg)"
  for r in $(seq "$R"); do
    for m in $SNAP_METHODS; do
      # shellcheck disable=SC2086 # args[$m] is split into flags on purpose
      load "$out/$m-r$r.txt" "${common[@]}" ${args[$m]} --n 1 --name-prefix "snap-$m-r$r"
      printf '  round %s %-8s %s\n' "$r" "$m" "$(grep '^round=' "$out/$m-r$r.txt" | cut -d' ' -f2- || echo failed)"
    done
  done
  stop_drivers
  umount "$run/btrfs" "$run/xfs" "$run/ext4"
  for dev in "${snap_dev[@]}"; do losetup -d "$dev"; done
  snap_dev=()

  med() { # $1 method, $2 phase: median over the rounds of the phase's time, in s
    for r in $(seq "$R"); do field "$out/$1-r$r.txt" "$2" p50_ms; done | awk '$1 != "" {printf "%.3f\n", $1/1000}' | median
  }
  echo
  echo "Median over $R rounds, seconds; copy = cp of the same data on the same pool, then syncfs:"
  echo
  echo "| method | snapshot s | restore s | plain copy s | snapshot/copy | restore/copy | fill s |"
  echo "|---|---|---|---|---|---|---|"
  for m in $SNAP_METHODS; do
    local sn rs cp
    sn=$(med "$m" snapshot) rs=$(med "$m" restore) cp=$(med "$m" copy)
    echo "| $m | $sn | $rs | $cp | $(ratio "$cp" "$sn") | $(ratio "$cp" "$rs") | $(med "$m" fill) |"
  done
}

for m in $MODE; do
  "bench_$m"
  echo
done
if [ "$failed" -ne 0 ]; then
  echo "bench: some runs had errors (see above)" >&2
  exit 1
fi
