#!/usr/bin/env bash
# heartbeat.sh WHAT CMD...: runs CMD and, while it runs, prints a line every
# 30 s with the time so far, so a long quiet step (go vet, staticcheck, the
# Kubernetes build) shows it is alive. Exits with CMD's status.
what=$1; shift
start=$(date +%s)
echo "$what: started"
"$@" &
pid=$!
( while sleep 30; do kill -0 $pid 2>/dev/null || exit 0; echo "$what: still running ($(( $(date +%s) - start ))s)"; done ) &
beat=$!
wait $pid
rc=$?
kill $beat 2>/dev/null
wait $beat 2>/dev/null
echo "$what: done in $(( $(date +%s) - start ))s (exit $rc)"
exit $rc
