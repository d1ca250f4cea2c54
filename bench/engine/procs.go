package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/bench/internal/proc"
	"github.com/drover/drover/client"
)

// startEtcd starts a single-member etcd under dir and waits until it takes
// a write.
func startEtcd(ctx context.Context, dir string) (*proc.Etcd, *clientv3.Client, string, error) {
	bin, err := proc.EtcdBinary(*etcdBin)
	if err != nil {
		return nil, nil, "", err
	}
	e, cli, err := proc.StartEtcd(ctx, dir, bin, 1)
	if err != nil {
		return nil, nil, "", err
	}
	return e, cli, e.ClientURLs[0], nil
}

// startServer starts bin/drover server against the external etcd with the
// controllers off: the scheduler and garbage collector would otherwise act on
// the benchmark's objects while they are being counted.
func startServer(ctx context.Context, dir, etcdURL string) (*proc.Drover, *client.Client, error) {
	d, err := proc.StartDrover(ctx, "drover server", *droverBin, filepath.Join(dir, "drover"), []string{etcdURL}, "--controllers=false")
	if err != nil {
		return nil, nil, err
	}
	benchCreds = d.Creds
	return d, d.Client, nil
}

// benchCreds are the server's admin credentials, for plain HTTP requests.
var benchCreds api.Credentials

// memory reads a process's /proc status memory lines (Vm*, Rss*), in MiB.
func memory(pid int) map[string]float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (strings.HasPrefix(f[0], "Vm") || strings.HasPrefix(f[0], "Rss")) {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v / 1024
		}
	}
	return out
}
