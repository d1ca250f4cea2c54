#!/usr/bin/env bash
# The test suite's last step: nothing it started may be left behind on the
# machine (containers, networks or volumes on Docker, addresses on lo,
# network namespaces, processes). Prints what is left and fails.
set -u
left=0
report() { echo "check-leftovers: $1"; left=1; }

names=""
for l in io.drover.host.id io.drover.test.cluster io.drover.kind; do
	names+=$(docker ps -a --filter "label=$l" --format '{{.Names}} ')
done
[ -n "$names" ] && report "containers left: $names"
n=$(docker network ls --format '{{.Name}}' | grep -E '^(drover|e2e)' || true)
[ -n "$n" ] && report "Docker networks left: $n"
a=$(ip -o addr show dev lo | grep -oE 'inet 10\.253\.[0-9.]+' || true)
[ -n "$a" ] && report "addresses left on lo: $a"
ns=$(ip netns list 2>/dev/null | grep -E '^(drover|dt-|test)' || true)
[ -n "$ns" ] && report "network namespaces left: $ns"
p=$(pgrep -a -f '/tmp/drover-test-bin/drover|bin/kube kube-apiserver|etcd --name test' 2>/dev/null | grep -v pgrep || true)
[ -n "$p" ] && report "processes left: $p"
if [ $left = 0 ]; then
	echo "check-leftovers: nothing left behind"
fi
exit $left
