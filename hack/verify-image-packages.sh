#!/usr/bin/env bash
# `make verify` part for the runtime image: the Dockerfile and the e2e
# suite's engine-less image build install the same Debian packages, because
# both install exactly the list in deploy/image/packages.txt and name no
# package of their own. A grep-level check of the two scripts' text.
set -euo pipefail
cd "$(dirname "$0")/.."

LIST=deploy/image/packages.txt
E2E_IMAGE_SCRIPT=test/e2e/scripts/rootfs.sh
failed=0
fail() {
	echo "verify-image-packages: $*"
	failed=1
}

[[ -f $LIST ]] || fail "$LIST is missing"
pkgs=$(sed -e 's/#.*//' "$LIST" | xargs)
[[ -n $pkgs ]] || fail "$LIST lists no package"
for p in $pkgs; do
	[[ $p =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || fail "$LIST: $p is not a Debian package name"
done

# The Dockerfile copies the list into the runtime stage, feeds it to
# apt-get install through xargs, and installs nothing else.
grep -Eq "^COPY +$LIST " Dockerfile || fail "Dockerfile does not COPY $LIST"
grep -Eq 'packages\.txt *\| *xargs' Dockerfile || fail "Dockerfile does not install $LIST through xargs"
installs=$(grep -Ec 'apt-get install' Dockerfile || true)
[[ $installs -eq 1 ]] || fail "Dockerfile has $installs apt-get install commands; want exactly the one fed by $LIST"
for p in $pkgs; do
	if grep -v '^ *#' Dockerfile | grep -Eq "(^|[[:space:]])$p([[:space:]]|\\\\|$)"; then
		fail "Dockerfile names the package $p itself; it must come from $LIST only"
	fi
done

# The e2e image script reads the same file.
if [[ ! -f $E2E_IMAGE_SCRIPT ]]; then
	fail "$E2E_IMAGE_SCRIPT is missing"
elif ! grep -Eq "deploy/image/packages\.txt" "$E2E_IMAGE_SCRIPT"; then
	fail "$E2E_IMAGE_SCRIPT does not read $LIST"
fi

if [[ $failed -ne 0 ]]; then
	exit 1
fi
echo "verify-image-packages: Dockerfile and $E2E_IMAGE_SCRIPT install $LIST: $pkgs"
