#!/usr/bin/env bash
# Installs what drover's tests need on a fresh Debian machine: Debian's etcd
# (the external etcd cluster the tests start) and staticcheck (lint). Safe to
# run again; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v etcd >/dev/null 2>&1; then
	echo "install-deps: installing etcd-server from Debian" >&2
	export DEBIAN_FRONTEND=noninteractive
	sudo_ apt-get update -qq
	sudo_ apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi

if [ ! -x bin/tools/staticcheck ] || ! bin/tools/staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	echo "install-deps: building staticcheck ${STATICCHECK_VERSION}" >&2
	GOBIN="$PWD/bin/tools" go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi
