//go:build tools

// kubectl is built from this module too (make bin/kubectl), for the
// benchmark that compares kubectld with it; this keeps its requirements in
// go.mod and go.sum.
package main

import _ "k8s.io/kubernetes/cmd/kubectl"
