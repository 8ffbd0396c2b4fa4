#!/usr/bin/env bash
# Runs every csi-sanity package (go test -v, Ginkgo without colour) and
# keeps the whole output in a log file. When go test passes, it prints a
# summary: per package Ginkgo's "Ran N of M Specs" line, its
# "N Passed | N Failed | N Pending | N Skipped" line and the test's ---
# line, then go test's "ok" line. When go test fails, for whatever reason (a
# failed spec, a build error, a timeout), it prints the whole log and then
# that summary, so no failure line can be filtered away. Exits with go
# test's status.
#
#   test/sanity/run.sh [go test flags...]
#
# The log is $SANITY_LOG, else bin/sanity.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

log=${SANITY_LOG:-bin/sanity.log}
mkdir -p "$(dirname "$log")"

echo "sanity: go test -v ./test/sanity/..., log in $log"
rc=0
${GO:-go} test "$@" -v ./test/sanity/... -args -ginkgo.no-color >"$log" 2>&1 || rc=$?

if [[ $rc -ne 0 ]]; then
	cat "$log"
	echo "==== end of the log; summary:"
fi
# go test prints each package's output in one piece (more than one package,
# so nothing is streamed), ending with its own "ok  <pkg>" or "FAIL <pkg>".
awk '
	/^Ran [0-9]+ of [0-9]+ Specs/ || /^(SUCCESS|FAIL)! -- / || /^--- (PASS|FAIL|SKIP): / { keep[k++] = $0 }
	/^(ok|FAIL|\?) *\t/ {
		for (i = 0; i < k; i++) print "  " keep[i]
		print
		k = 0
	}
' "$log"
if [[ $rc -ne 0 ]]; then
	echo "sanity: FAILED (go test exit $rc); full log: $log"
else
	echo "sanity: passed; full log: $log"
fi
exit "$rc"
