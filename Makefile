# drover: make up (run the engine), make test (everything, installing what it needs).
GO       ?= go
# Evaluated once: the images and the binary that runs them carry the same tag.
ifndef VERSION
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
endif
LDFLAGS  := -X main.version=$(VERSION)
DATA_DIR ?= $(CURDIR)/.drover
LISTEN   ?= 127.0.0.1:8080
# Integration tests share 2 cores with etcd processes; give them room.
TEST_TIMEOUT ?= 20m

.PHONY: all build kube deps images test test-short lint fuzz bench bench-chaos bench-net bench-engine bench-kube bench-sched bench-stack bench-netsvc bench-up bench-lb bench-ingress bench-kubectld bench-stacks up engine clean

# Kubernetes is built from source; its version is named once, in images/kubernetes/go.mod.
KUBE_VERSION := $(shell grep -oE '^\s*(require )?k8s.io/kubernetes v[0-9.]+' images/kubernetes/go.mod | awk '{print $$NF}')
KUBE_MINOR   := $(word 2,$(subst ., ,$(KUBE_VERSION)))
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(KUBE_MINOR) \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$(KUBE_MINOR)

all: build

build:
	@CGO_ENABLED=0 scripts/heartbeat.sh "building bin/drover (cold: 2-4 min)" $(GO) build -ldflags "$(LDFLAGS)" -o bin/drover ./cmd/drover

## kube: bin/kube, every Kubernetes component in one binary (a cold build takes several minutes).
kube: bin/kube
bin/kube: images/kubernetes/go.mod images/kubernetes/go.sum $(wildcard images/kubernetes/*.go)
	@echo "building Kubernetes $(KUBE_VERSION) components into bin/kube (cold: several minutes)"
	cd images/kubernetes && CGO_ENABLED=0 ../../scripts/heartbeat.sh "kube build (cold: 7-10 min)" $(GO) build -ldflags "$(KUBE_LDFLAGS)" -o ../../bin/kube .

deps:
	./scripts/install-deps.sh

## images: every image the stacks run, built from this repository and Debian's packages (only what changed).
images: deps kube
	$(GO) run ./images/build -version $(VERSION) -kube bin/kube

## test: lint, then every test (unit, and integration against real etcd and a real kube-apiserver) with the race detector.
## The end-to-end test (a two-host Kubernetes in containers) runs alone afterwards: beside it,
## the timing-sensitive soak tests (500 hosts' leases) would measure its load, not drover.
test: deps lint kube images
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v -e /test/e2e -e /cloudprovider)
	@# Without -race: k8s.io/cloud-provider's service controller writes its
	@# cache entries unlocked beside its node sync (kubernetes/kubernetes#100846);
	@# the detector reports that race in their code on every run.
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./cloudprovider
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./test/e2e
	scripts/check-leftovers.sh

## test-short: unit tests only, no real parts needed.
test-short:
	$(GO) test -short -count=1 ./...

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	scripts/heartbeat.sh "go vet (warm: about 1 min)" $(GO) vet ./...
	scripts/heartbeat.sh "staticcheck (warm: about 1 min)" bin/tools/staticcheck ./...

## fuzz: run each fuzz target for FUZZTIME (default 30s). Minimizing a new
## input is bounded (FUZZMINIMIZETIME): unbounded, Go spends up to a minute
## on each, reported as 0 execs/s (that was FuzzParse's "4.8k in 75 s").
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 1s
fuzz:
	$(GO) test -run XXX -fuzz FuzzDecodeObject -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./apiserver/
	$(GO) test -run XXX -fuzz FuzzMergePatch -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./apiserver/
	$(GO) test -run XXX -fuzz FuzzCheckTemplate -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./apiserver/
	$(GO) test -run XXX -fuzz FuzzRegisterBody -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./apiserver/
	$(GO) test -run XXX -fuzz FuzzNames -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./apiserver/
	$(GO) test -run XXX -fuzz FuzzKeyringOpen -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./store/
	$(GO) test -run XXX -fuzz FuzzCredentials -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./auth/
	$(GO) test -run XXX -fuzz FuzzParseSelector -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./api/
	$(GO) test -run XXX -fuzz FuzzSplitData -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./client/
	$(GO) test -run XXX -fuzz FuzzWatchFrames -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./client/
	$(GO) test -run XXX -fuzz FuzzParse -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./stacks/
	$(GO) test -run XXX -fuzz FuzzAffinity -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./stacks/
	$(GO) test -run XXX -fuzz FuzzRenderTemplate -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./stacks/
	$(GO) test -run XXX -fuzz FuzzNormalizeCompose -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./stacks/
	$(GO) test -run XXX -fuzz FuzzServeDNS -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./dns/resolver/
	$(GO) test -run XXX -fuzz FuzzTopField -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./metadata/
	$(GO) test -run XXX -fuzz FuzzMetadataPath -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./metadata/
	$(GO) test -run XXX -fuzz FuzzDecode -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./kubectld/manifest/
	$(GO) test -run XXX -fuzz FuzzInterpolate -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./kubectld/manifest/

## bench: every benchmark (prints one line per figure).
bench: bench-engine bench-kube bench-sched bench-stack bench-stacks bench-netsvc bench-net bench-lb bench-ingress bench-kubectld

## bench-lb: render 5,000 rules; requests/s through HAProxy beside the same client straight to
## the backend; 20 reloads under load (failed requests, time until the new config serves).
bench-lb: deps
	$(GO) run ./bench/lb

## bench-ingress: 2,000 Ingresses created at once until all have status and answer through
## HAProxy, then single changes to live (p50, p99), beside HAProxy started and reloaded bare.
bench-ingress: deps kube
	$(GO) test -run XXX -bench BenchmarkIngress -benchtime 1x -timeout 15m ./ingress-controller/

## bench-kubectld: a 500-object manifest through /v1-kubectl/apply beside kubectl apply
## --server-side (built from the pinned Kubernetes) against the same kube-apiserver.
bench-kubectld: deps kube bin/kubectl
	$(GO) test -run XXX -bench BenchmarkKubectldApply -benchtime 1x -timeout 15m ./kubectld/

## bin/kubectl: kubectl of the pinned Kubernetes version (for bench-kubectld only).
bin/kubectl: images/kubernetes/go.mod images/kubernetes/go.sum
	@echo "building kubectl $(KUBE_VERSION) into bin/kubectl"
	cd images/kubernetes && CGO_ENABLED=0 $(GO) build -ldflags "$(KUBE_LDFLAGS)" -o ../../bin/kubectl k8s.io/kubernetes/cmd/kubectl

## bench-up: drover up on a fresh host container until the node is Ready and DNS answers,
## then a second host joining until Ready (images built first).
bench-up: images
	$(GO) run ./bench/up -version $(VERSION)

## bench-engine: engine throughput, event latency, large lists and memory, each beside the same
## figure for raw etcd (Debian's, from deps) in the same run; the server runs with controllers off.
bench-engine: deps build
	$(GO) run ./bench/engine

## bench-chaos: writers through two servers on a 3-member etcd while the etcd leader and a server
## are killed and restarted (60 s): acknowledged writes lost, unknown outcomes, events lost or
## duplicated, p99 during and outside the faults.
bench-chaos: deps build
	$(GO) run ./bench/chaos

## bench-net: the overlay in network namespaces: pod->pod TCP over VXLAN vs a plain veth (iperf3),
## programming 1,000 remote hosts vs iproute2 batches, host join -> routes everywhere vs a watch.
bench-net: deps
	$(GO) test -count=1 -run XXX -bench 'OverlayThroughput|ProgramRemoteHosts|HostJoin' -benchtime 1x -timeout 10m ./net

## bench-sched: scheduling decisions for 1,000 services of scale 10 over 100 hosts.
bench-sched:
	$(GO) test -count=1 -run XXX -bench Schedule -benchtime 3x ./scheduler

## bench-stack: a 20-service stack running on one host, drover vs docker-compose up -d.
bench-stack: deps
	$(GO) test -count=1 -run XXX -bench StackUp -benchtime 1x -timeout 10m ./agent

## bench-stacks: 1,000 Rancher catalog template versions (made from stacks/testdata/rancher)
## parsed and checked as the engine does, beside docker-compose config -q on the same services.
bench-stacks: deps
	$(GO) test -run XXX -bench BenchmarkParseCatalog -benchtime 1x ./stacks/

## bench-netsvc: dns (dnsperf) and metadata with 10,000 services and 50,000 containers loaded.
bench-netsvc: build deps
	$(GO) run ./bench/netsvc
	$(GO) test -count=1 -run XXX -bench ApplyContainerChange -benchtime 20000x ./dns ./metadata

## bench-kube: kubernetes-agent: 2,000 Services and 10,000 Pods against a real kube-apiserver.
bench-kube: kube deps
	$(GO) test -count=1 -run XXX -bench KubeSync -benchtime 1x -timeout 20m ./kubernetes-agent

## up: build and run the engine with its embedded etcd on $(LISTEN); data in $(DATA_DIR).
## up: Kubernetes on this host (drover up): builds drover and its images, then runs the engine,
## the agent, the infra and kubernetes stacks, and writes /var/lib/drover/kubeconfig.
up: build images
	bin/drover up

## engine: only the engine, in the foreground (embedded etcd, data in DATA_DIR).
engine: build
	@echo "drover: starting the engine on http://$(LISTEN); admin credentials will be in $(DATA_DIR)/credentials.json"
	@echo "drover: next, in another shell here: bin/drover host ls   (the CLI finds ./.drover/credentials.json; elsewhere: export DROVER_CREDENTIALS=$(DATA_DIR)/credentials.json)"
	bin/drover server --listen $(LISTEN) --data-dir $(DATA_DIR)

clean:
	rm -rf bin
