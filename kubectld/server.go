package kubectld

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/drover/drover/client"
	"github.com/drover/drover/kubectld/manifest"
)

// Output is the answer of every /v1-kubectl call, in Rancher's kubectld
// shape: what kubectl would have printed and its exit code.
type Output struct {
	ExitCode int    `json:"exitCode"`
	StdOut   string `json:"stdOut"`
	StdErr   string `json:"stdErr"`
	Error    string `json:"error,omitempty"`
}

// Rancher's kubectld status codes: 203 for a POST that worked, 200 for a
// GET, 500 when the command failed, 400 for a request it could not read.
// 401 and 403 are ours (Rancher's had no authentication).
const (
	statusPostOK = http.StatusNonAuthoritativeInfo
	statusFailed = http.StatusInternalServerError
)

// API serves /v1-kubectl.
type API struct {
	Applier *Applier
	Engine  *client.Client
	Log     *slog.Logger
	m       *metrics
}

type metrics struct {
	requests *prometheus.CounterVec
	objects  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	writes   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_kubectld_requests_total", Help: "/v1-kubectl requests by verb and HTTP status."}, []string{"verb", "code"}),
		objects:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_kubectld_objects_total", Help: "Objects written by verb."}, []string{"verb"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "drover_kubectld_request_seconds", Help: "Time to serve a /v1-kubectl request.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"verb"}),
	}
	m.writes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_kubectld_writes_total", Help: "Writes the stack controller made, by side (engine, kubernetes), kind and operation."}, []string{"side", "kind", "op"})
	reg.MustRegister(m.requests, m.objects, m.duration, m.writes)
	return m
}

// Handler routes /v1-kubectl.
func (s *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1-kubectl/catalog", s.authed("catalog", s.catalog))
	mux.HandleFunc("POST /v1-kubectl/{verb}", s.authed("", s.post))
	mux.HandleFunc("GET /v1-kubectl/{path...}", s.authed("get", s.get))
	return mux
}

// authed lets callers with an engine admin or service key through: the
// engine itself says who holds the key (TokenReview), so a key revoked a
// moment ago fails here at once.
func (s *API) authed(verb string, h func(http.ResponseWriter, *http.Request) int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		v := verb
		if v == "" {
			v = r.PathValue("verb")
		}
		code := s.authenticate(w, r)
		if code == 0 {
			code = h(w, r)
		}
		s.m.requests.WithLabelValues(v, strconv.Itoa(code)).Inc()
		s.m.duration.WithLabelValues(v).Observe(time.Since(start).Seconds())
	}
}

func (s *API) authenticate(w http.ResponseWriter, r *http.Request) int {
	token := ""
	if ak, sk, ok := r.BasicAuth(); ok {
		token = ak + ":" + sk
	} else if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		token = strings.TrimSpace(t)
	}
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="drover"`)
		return writeOutput(w, http.StatusUnauthorized, Output{ExitCode: -1, StdErr: "an engine API key is required (HTTP Basic accessKey:secretKey, or Authorization: Bearer accessKey:secretKey)"})
	}
	u, err := s.Engine.ReviewToken(r.Context(), token)
	if err != nil {
		s.Log.Error("reviewing a caller's key", "err", err)
		return writeOutput(w, http.StatusServiceUnavailable, Output{ExitCode: -1, StdErr: "cannot check the key with the engine: " + err.Error()})
	}
	if !u.Authenticated {
		w.Header().Set("WWW-Authenticate", `Basic realm="drover"`)
		return writeOutput(w, http.StatusUnauthorized, Output{ExitCode: -1, StdErr: "the engine refused the key: " + u.Error})
	}
	for _, g := range u.Groups {
		if g == "system:masters" || g == "drover:service" {
			return 0
		}
	}
	return writeOutput(w, http.StatusForbidden, Output{ExitCode: -1, StdErr: u.Username + " may not use kubectld: an admin or service key is required"})
}

func writeOutput(w http.ResponseWriter, code int, o Output) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(o)
	w.Write(append(b, '\n'))
	return code
}

func badRequest(w http.ResponseWriter, err error) int {
	return writeOutput(w, http.StatusBadRequest, Output{ExitCode: -1, StdErr: err.Error(), Error: err.Error()})
}

// post serves create, apply, replace and delete: a body of one or many
// YAML or JSON documents; defaultNamespace for objects that name none;
// partial=true keeps what was written before a failing document.
func (s *API) post(w http.ResponseWriter, r *http.Request) int {
	verb := r.PathValue("verb")
	switch verb {
	case VerbCreate, VerbApply, VerbReplace, VerbDelete:
	default:
		return writeOutput(w, http.StatusNotFound, Output{ExitCode: -1, StdErr: fmt.Sprintf("unknown command %q: use create, apply, replace, delete or catalog", verb)})
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, manifest.MaxBytes+1))
	if err != nil {
		return badRequest(w, fmt.Errorf("reading the body: %w", err))
	}
	docs, err := manifest.Decode("body", body)
	if err != nil {
		return badRequest(w, err)
	}
	if len(docs) == 0 {
		return badRequest(w, errors.New("body: no objects (want YAML or JSON documents, each with apiVersion, kind and metadata.name)"))
	}
	partial, _ := strconv.ParseBool(r.FormValue("partial"))
	res := s.Applier.Run(r.Context(), verb, docs, ApplyOptions{DefaultNamespace: r.FormValue("defaultNamespace"), Partial: partial})
	return s.answer(w, verb, res, partial)
}

func (s *API) answer(w http.ResponseWriter, verb string, res *Result, partial bool) int {
	s.m.objects.WithLabelValues(verb).Add(float64(len(res.Lines)))
	out := Output{StdOut: strings.Join(res.Lines, "\n")}
	if out.StdOut != "" {
		out.StdOut += "\n"
	}
	var errs []string
	errs = append(errs, res.Errors...)
	if res.Err != nil {
		msg := "error: " + res.Err.Error()
		if !partial && verb != VerbDelete {
			msg += " (nothing was written: the request is all or nothing unless partial=true)"
		}
		errs = append(errs, msg)
	}
	if len(errs) > 0 {
		out.ExitCode = 1
		out.StdErr = strings.Join(errs, "\n") + "\n"
		out.Error = errs[0]
		return writeOutput(w, statusFailed, out)
	}
	return writeOutput(w, statusPostOK, out)
}

type catalogRequest struct {
	Files       map[string]string `json:"files"`
	Environment map[string]string `json:"environment"`
}

// catalog applies a catalog template's files ({"files": {name: content},
// "environment": {VAR: value}}), skipping its compose files as Rancher's
// kubectld did; ${VAR} comes from environment.
func (s *API) catalog(w http.ResponseWriter, r *http.Request) int {
	var req catalogRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, manifest.MaxBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return badRequest(w, fmt.Errorf("body: want {\"files\": {name: content}, \"environment\": {VAR: value}}: %v", err))
	}
	docs, err := manifest.Render(req.Files, req.Environment)
	if err != nil {
		return badRequest(w, err)
	}
	if len(docs) == 0 {
		return badRequest(w, errors.New("files: no .yaml, .yml or .json file with objects"))
	}
	res := s.Applier.Run(r.Context(), VerbApply, docs, ApplyOptions{DefaultNamespace: r.FormValue("defaultNamespace")})
	return s.answer(w, "catalog", res, false)
}

// get serves GET /v1-kubectl/{resource}[/{name}]?namespace=NS: YAML, as
// `kubectl get -o yaml` prints it (every namespace when none is given).
func (s *API) get(w http.ResponseWriter, r *http.Request) int {
	path := strings.Trim(r.PathValue("path"), "/")
	resource, name, _ := strings.Cut(path, "/")
	if resource == "" || strings.Contains(name, "/") {
		return badRequest(w, fmt.Errorf("path %q: want /v1-kubectl/RESOURCE or /v1-kubectl/RESOURCE/NAME", path))
	}
	out, err := s.Applier.Get(r.Context(), resource, name, r.FormValue("namespace"))
	if err != nil {
		msg := "error: " + message(err)
		return writeOutput(w, statusFailed, Output{ExitCode: 1, StdErr: msg + "\n", Error: msg})
	}
	return writeOutput(w, http.StatusOK, Output{StdOut: string(out)})
}

// Get reads one object or a list, as YAML.
func (a *Applier) Get(ctx context.Context, resource, name, ns string) ([]byte, error) {
	gvr, err := a.resourceFor(resource)
	if err != nil {
		return nil, err
	}
	gvk, err := a.mapper.KindFor(gvr)
	if err != nil {
		return nil, err
	}
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	ri := a.dyn.Resource(m.Resource)
	var rif interface {
		Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
		List(context.Context, metav1.ListOptions) (*unstructured.UnstructuredList, error)
	} = ri
	if m.Scope.Name() == meta.RESTScopeNameNamespace && (ns != "" || name != "") {
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		rif = ri.Namespace(ns)
	}
	if name != "" {
		o, err := rif.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return yaml.Marshal(o.Object)
	}
	l, err := rif.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	items := make([]any, len(l.Items))
	sort.Slice(l.Items, func(i, j int) bool {
		a, b := l.Items[i], l.Items[j]
		return a.GetNamespace()+"/"+a.GetName() < b.GetNamespace()+"/"+b.GetName()
	})
	for i := range l.Items {
		items[i] = l.Items[i].Object
	}
	return yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items, "metadata": map[string]any{"resourceVersion": ""}})
}

// resourceFor understands what kubectl get does: "pods", "pod", "po",
// "deployments.apps", "Deployment".
func (a *Applier) resourceFor(s string) (schema.GroupVersionResource, error) {
	gr := schema.ParseGroupResource(strings.ToLower(s))
	gvr, err := a.short.ResourceFor(gr.WithVersion(""))
	if err != nil && meta.IsNoMatchError(err) {
		a.refreshDiscovery(false)
		gvr, err = a.short.ResourceFor(gr.WithVersion(""))
	}
	if err != nil {
		return gvr, fmt.Errorf("the server doesn't have a resource type %q", s)
	}
	return gvr, nil
}
