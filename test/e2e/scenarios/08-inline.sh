#!/bin/bash
# 8. CSI inline volume (examples/inline): the CSIDriver admits Ephemeral
#    volumes; the pod gets a filesystem of the size its volumeAttributes
#    ask, which refuses writes past it; the volume's image exists on the
#    host while the pod runs and is deleted, with its loop device, when the
#    pod goes.
source "$(dirname "$0")/lib.sh"
modes=$(kubectl get csidriver hostvol.csi.io -o jsonpath='{.spec.volumeLifecycleModes[*]}')
expect "CSIDriver lifecycle modes are Persistent and Ephemeral (got: $modes)" test "$modes" = "Persistent Ephemeral"
new_ns
images() { find "$POOL/images" -maxdepth 1 -name '*.img' 2>/dev/null | sort; }
before=$(images)
k apply -f "$EXAMPLES/inline/" >/dev/null
pod_ready hostvol-inline
t=$(k exec hostvol-inline -- sh -c "grep ' /scratch ' /proc/mounts | cut -d' ' -f3")
expect "/scratch is ext4 (got $t)" test "$t" = ext4
kib=$(df_kib hostvol-inline /scratch)
expect "df shows the 256Mi the pod asked for ($kib KiB: between 0.85 and 1 x 256 MiB)" \
  test "$kib" -le 262144 -a "$kib" -ge $(( 262144 * 85 / 100 ))
out=$(k exec hostvol-inline -- sh -c 'dd if=/dev/zero of=/scratch/fill bs=1M count=300 2>&1; echo "exit=$?"')
expect "writing 300MiB into 256Mi fails with ENOSPC ($(echo "$out" | grep -m1 -i 'space' || true))" \
  bash -c 'grep -q "No space left on device" <<<"$1" && ! grep -q "exit=0" <<<"$1"' _ "$out"
img=$(comm -13 <(echo "$before") <(images) | head -1)
expect "the volume's image is in the pool on the host ($img)" test -n "$img" -a -f "$img"
expect "a loop device backs it ($(losetup -j "$img" | cut -d: -f1))" test -n "$(losetup -j "$img")"
# The image's device and inode: once it is deleted, losetup -j finds nothing
# whatever is attached.
backing=$(stat -c '%Hd:%Ld %i' "$img")
attached() { losetup -n -O BACK-MAJ:MIN,BACK-INO | awk -v b="$backing" '$1 " " $2 == b'; }
expect "no claim or PV was made for it" test -z "$(k get pvc -o name)"
k delete pod hostvol-inline --wait=true >/dev/null
eventually 60 "the image is deleted with the pod" test ! -e "$img"
eventually 30 "its loop device is detached (none is backed by device and inode $backing)" none attached
cleanup_ns
