#!/bin/bash
# mkimage.sh OUT.tar REF ENTRYPOINT_JSON CMD_JSON LAYER.tar...
# Writes a docker-archive (the `docker save` format) that
# `ctr images import` loads, without any container engine: each LAYER.tar is
# an uncompressed layer (a root filesystem or files on top of the previous
# layers), in order.
set -euo pipefail
out=$1 ref=$2 ep=$3 cmd=$4; shift 4
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
diff_ids= layers=
for l in "$@"; do
  d=$(sha256sum "$l" | cut -d' ' -f1)
  mkdir -p "$w/$d"; cp "$l" "$w/$d/layer.tar"
  diff_ids="$diff_ids${diff_ids:+,}\"sha256:$d\""
  layers="$layers${layers:+,}\"$d/layer.tar\""
done
cat > "$w/config.json" <<J
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Entrypoint":$ep,"Cmd":$cmd,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":[$diff_ids]},
 "history":[{"created":"1970-01-01T00:00:00Z","created_by":"test/e2e/scripts/mkimage.sh"}]}
J
c=$(sha256sum "$w/config.json" | cut -d' ' -f1); mv "$w/config.json" "$w/$c.json"
echo "[{\"Config\":\"$c.json\",\"RepoTags\":[\"$ref\"],\"Layers\":[$layers]}]" > "$w/manifest.json"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$w" -cf "$out.tmp" .
mv "$out.tmp" "$out"
