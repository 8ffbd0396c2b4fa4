#!/bin/bash
# 3. Raw block (examples/block): the pod gets a block device of the requested
#    size under volumeDevices, writes to it and reads the same bytes back.
source "$(dirname "$0")/lib.sh"
new_ns
k apply -f "$EXAMPLES/block/" >/dev/null
pod_ready hostvol-block
expect "claim Bound" test "$(pvc_phase hostvol-block)" = Bound
expect "PV is volumeMode Block" test "$(kubectl get pv "$(pvc_pv hostvol-block)" -o jsonpath='{.spec.volumeMode}')" = Block
expect "/dev/xvda is a block device in the pod" k exec hostvol-block -- test -b /dev/xvda
size=$(k exec hostvol-block -- blockdev --getsize64 /dev/xvda)
expect "device size is 1Gi ($size bytes)" test "$size" = 1073741824
sums=$(k exec hostvol-block -- sh -c '
  dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null
  dd if=/tmp/pattern of=/dev/xvda bs=1M seek=100 conv=fsync 2>/dev/null
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
  dd if=/dev/xvda of=/tmp/back bs=1M skip=100 count=8 iflag=direct 2>/dev/null || dd if=/dev/xvda of=/tmp/back bs=1M skip=100 count=8 2>/dev/null
  md5sum /tmp/pattern /tmp/back | cut -d" " -f1')
expect "8MiB written at 100MiB reads back identical" test "$(echo "$sums" | sort -u | wc -l)" = 1 -a -n "$sums"
# And after the pod is gone and back (the device is unstaged and staged again).
k exec hostvol-block -- sh -c 'dd if=/dev/xvda bs=1M skip=100 count=8 2>/dev/null | md5sum' > /tmp/e2e-block-before.$$
k delete pod hostvol-block --wait=true >/dev/null
k apply -f "$EXAMPLES/block/" >/dev/null
pod_ready hostvol-block
after=$(k exec hostvol-block -- sh -c 'dd if=/dev/xvda bs=1M skip=100 count=8 2>/dev/null | md5sum')
expect "the bytes survive pod re-creation" test "$after" = "$(cat /tmp/e2e-block-before.$$)"
rm -f /tmp/e2e-block-before.$$
cleanup_ns
