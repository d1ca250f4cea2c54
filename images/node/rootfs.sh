#!/usr/bin/env bash
# rootfs.sh OUT.tar: a Debian bookworm root file system for drover's node,
# host and LB images, made with debootstrap from the Debian mirror this machine's apt
# already uses (read from its sources, never written here), packed as a tar
# that `docker import` takes. Packages: the container runtime the kubelet
# talks to (containerd, runc built with seccomp), the tools kubelet and
# kube-proxy call (iptables, nftables, conntrack, mount, ...), the CNI
# loopback plugin, CA certificates, and the Docker Engine (a test host runs
# the drover agent against its own Docker, as kind runs its nodes).
set -euo pipefail
out=${1:?usage: rootfs.sh OUT.tar}
# The node image's packages, unless the caller names others (the LB image
# asks for haproxy alone).
if [ -n "${ROOTFS_PACKAGES:-}" ]; then
	read -r -a PACKAGES <<<"$ROOTFS_PACKAGES"
else
	PACKAGES=(containerd runc docker.io iptables nftables conntrack mount util-linux
		iproute2 procps kmod ca-certificates containernetworking-plugins ethtool socat
		curl e2fsprogs xz-utils)
fi

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	# The first deb URI of apt's own sources (deb822 or one-line form).
	mirror=$( (grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
		grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}') | grep -v security | head -1) || true
fi
if [ -z "$mirror" ]; then
	echo "rootfs: no Debian mirror found in /etc/apt; set DEBIAN_MIRROR" >&2
	exit 1
fi
if ! command -v debootstrap >/dev/null; then
	echo "rootfs: debootstrap is missing (make deps installs it)" >&2
	exit 1
fi
dir=$(mktemp -d /var/tmp/drover-rootfs.XXXXXX)
trap 'umount -R "$dir" 2>/dev/null || true; rm -rf "$dir"' EXIT
inc=$(IFS=,; echo "${PACKAGES[*]}")
echo "rootfs: debootstrap bookworm (${#PACKAGES[@]} packages and their dependencies); this takes a few minutes" >&2
start=$(date +%s)
debootstrap --variant=minbase --include="$inc" bookworm "$dir" "$mirror" 2>&1 |
	awk '/^I: (Retrieving|Validating|Unpacking|Configuring)/ { n++; if (n % 40 == 0) { print "rootfs:", $0; fflush() } } /^[EW]:/ { print; fflush() }' >&2
# Slim it: no apt lists, docs or caches in the image.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
echo "rootfs: packing" >&2
tar -C "$dir" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "rootfs: done in $(( $(date +%s) - start )) s ($(du -h "$out" | cut -f1))" >&2
