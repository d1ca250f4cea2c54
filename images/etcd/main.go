// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3 etcdmain, at
// the version drover embeds), built static for the drover/etcd image, so the
// Kubernetes stack's etcd needs no registry.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
