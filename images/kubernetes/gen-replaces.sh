#!/usr/bin/env bash
# Rewrites go.mod's replace block for the k8s.io/kubernetes version in its
# require line: every staging module k8s.io/kubernetes names as v0.0.0 is
# pointed at the published v0.<minor>.<patch> of that version.
set -euo pipefail
cd "$(dirname "$0")"
ver=$(grep -oE '^\s*(require )?k8s.io/kubernetes v[0-9.]+' go.mod | awk '{print $NF}')
staging=v0.${ver#v1.}
gomod=$(go mod download -json "k8s.io/kubernetes@$ver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
	sed '/^replace (/,$d' go.mod
	echo "replace ("
	grep -E '^\s+k8s.io/.* v0.0.0$' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
	echo ")"
} > go.mod.new
mv go.mod.new go.mod
echo "go.mod now builds Kubernetes $ver with staging modules at $staging"
