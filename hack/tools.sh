#!/usr/bin/env bash
# Pinned kustomize, helm and golangci-lint for `make verify`, built with
# `go install` from the Go module proxy (no other download) into a cache
# outside the repo, one directory per version, so a bump installs afresh
# and the old copy stays usable by other checkouts.
#
#   hack/tools.sh                install what is missing; print the bin dirs
#   hack/tools.sh kustomize      install if missing; print the binary's path
#   hack/tools.sh helm           the same for helm
#   hack/tools.sh golangci-lint  the same for golangci-lint
#
# The cache is $HOSTVOL_TOOLS, else /var/cache/hostvol-tools when that is
# writable (root, CI), else ${XDG_CACHE_HOME:-~/.cache}/hostvol-tools.
# A cold install (empty module and build caches, 2 cores) takes 3.5 to 4.5
# minutes for kustomize and helm (kustomize about 70 s, helm the rest),
# plus about 7 minutes for golangci-lint (7m21s with the module cache
# empty and the machine shared, load 7 to 8); afterwards nothing is built.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2 # v5.8.3 needs Go 1.27
HELM_VERSION=v3.22.0
GOLANGCI_LINT_VERSION=v2.15.0

cache_dir() {
	if [[ -n "${HOSTVOL_TOOLS:-}" ]]; then
		echo "$HOSTVOL_TOOLS"
	elif mkdir -p /var/cache/hostvol-tools 2>/dev/null && [[ -w /var/cache/hostvol-tools ]]; then
		echo /var/cache/hostvol-tools
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/hostvol-tools"
	fi
}

# install NAME VERSION PACKAGE: $CACHE/NAME-VERSION/NAME, built once.
# Built in a temporary directory and renamed into place, so an interrupted
# or concurrent install never leaves a half-written binary behind.
install() {
	local name=$1 version=$2 pkg=$3
	local dir=$CACHE/$name-$version
	if [[ -x $dir/$name ]]; then
		echo "$dir/$name"
		return
	fi
	mkdir -p "$CACHE"
	local tmp
	tmp=$(mktemp -d "$CACHE/.$name-$version.XXXXXX")
	local start=$SECONDS
	echo "tools: building $name $version (go install $pkg@$version)..." >&2
	if ! (cd "$tmp" && GOBIN=$tmp/bin CGO_ENABLED=0 \
		go install -trimpath -ldflags "-s -w" "$pkg@$version" >&2); then
		rm -rf "$tmp"
		echo "tools: go install $pkg@$version failed" >&2
		return 1
	fi
	if ! mv -T "$tmp/bin" "$dir" 2>/dev/null; then
		# Another install got there first.
		[[ -x $dir/$name ]] || { rm -rf "$tmp"; echo "tools: cannot install into $dir" >&2; return 1; }
	fi
	rm -rf "$tmp"
	echo "tools: $name $version built in $((SECONDS - start))s: $dir/$name" >&2
	echo "$dir/$name"
}

CACHE=$(cache_dir)
case "${1:-all}" in
kustomize) install kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5 ;;
helm) install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
golangci-lint) install golangci-lint "$GOLANGCI_LINT_VERSION" github.com/golangci/golangci-lint/v2/cmd/golangci-lint ;;
all)
	dirname "$(install kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5)"
	dirname "$(install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm)"
	dirname "$(install golangci-lint "$GOLANGCI_LINT_VERSION" github.com/golangci/golangci-lint/v2/cmd/golangci-lint)"
	;;
*)
	echo "usage: $0 [kustomize|helm|golangci-lint|all]" >&2
	exit 2
	;;
esac
