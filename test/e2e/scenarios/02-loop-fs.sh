#!/bin/bash
# 2. Loop filesystems (examples/loop-ext4, examples/loop-xfs): the pod sees
#    the requested size, and writing past it fails inside the pod.
source "$(dirname "$0")/lib.sh"
new_ns
k apply -f "$EXAMPLES/loop-ext4/" -f "$EXAMPLES/loop-xfs/" >/dev/null
for fs in ext4 xfs; do
  p=hostvol-loop-$fs
  pod_ready $p
  expect "$p claim Bound" test "$(pvc_phase $p)" = Bound
  t=$(k exec $p -- sh -c "grep ' /data ' /proc/mounts | cut -d' ' -f3")
  expect "$p: /data is $fs (got $t)" test "$t" = "$fs"
  kib=$(df_kib $p /data)
  # The filesystem's own metadata takes a little of the 1Gi image.
  expect "$p: df shows the requested 1Gi ($kib KiB: between 0.85 and 1 GiB)" \
    test "$kib" -le $GiB -a "$kib" -ge $(( GiB * 85 / 100 ))
  out=$(k exec $p -- sh -c 'dd if=/dev/zero of=/data/fill bs=1M count=1200 2>&1; echo "exit=$?"')
  expect "$p: writing 1200MiB into 1Gi fails with ENOSPC ($(echo "$out" | grep -m1 -i 'space' || true))" \
    bash -c 'grep -q "No space left on device" <<<"$1" && ! grep -q "exit=0" <<<"$1"' _ "$out"
  k exec $p -- rm -f /data/fill
done
cleanup_ns
