#!/usr/bin/env bash
# Installs what drover's tests need on a fresh Debian machine: Debian's etcd
# (the external etcd clusters the tests start), docker-compose (the stack
# benchmark's baseline) and staticcheck (lint). The Docker Engine itself is
# expected to be running. Safe to
# run again; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# docker-compose: the stack benchmark runs it beside drover.
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# dig: the DNS tests check answers with a second, independent client.
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
# dnsperf: the DNS benchmark's load generator.
command -v dnsperf >/dev/null 2>&1 || missing+=(dnsperf)
# iperf3: the overlay benchmark's throughput peer and load.
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
# debootstrap: the node image's Debian root file system (make images).
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# curl: the load balancer's Docker test reaches it as a user would.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# jq: the README's examples use it, and its doc test runs them.
command -v jq >/dev/null 2>&1 || missing+=(jq)
# haproxy: the load balancer tests check configs with it and run it.
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
# nsenter: the CNI tests run the plugin inside a host namespace, as a runtime does.
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]} from Debian" >&2
	export DEBIAN_FRONTEND=noninteractive
	# Another apt (unattended upgrades, a second make) may hold the lock:
	# wait for it rather than fail.
	sudo_ apt-get -o DPkg::Lock::Timeout=600 update -qq
	sudo_ apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
	echo "install-deps: warning: the Docker Engine is not reachable; the agent's tests need it running" >&2
fi

if [ ! -x bin/tools/staticcheck ] || ! bin/tools/staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	echo "install-deps: building staticcheck ${STATICCHECK_VERSION}" >&2
	GOBIN="$PWD/bin/tools" go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi
