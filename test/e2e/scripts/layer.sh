#!/bin/bash
# layer.sh OUT.tar DIR: a reproducible layer tarball of DIR's contents.
set -euo pipefail
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$2" -cf "$1.tmp" .
mv "$1.tmp" "$1"
