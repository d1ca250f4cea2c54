package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
	"github.com/drover/drover/events"
	"github.com/drover/drover/store"
)

type ctxKey int

const principalKey ctxKey = 0

func principalFrom(ctx context.Context) *auth.Principal {
	p, _ := ctx.Value(principalKey).(*auth.Principal)
	return p
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.authed(s.metricsHandler()))
	mux.Handle("GET /v1", s.authed(http.HandlerFunc(s.index)))
	mux.Handle("/debug/pprof/", s.authed(adminOnly(http.HandlerFunc(pprof.Index))))
	mux.Handle("/debug/pprof/profile", s.authed(adminOnly(http.HandlerFunc(pprof.Profile))))
	mux.Handle("/debug/pprof/trace", s.authed(adminOnly(http.HandlerFunc(pprof.Trace))))
	mux.HandleFunc("POST /v1/hosts/register", s.register)
	mux.Handle("GET /v1/subscribe", s.authed(http.HandlerFunc(s.subscribeWS)))
	mux.Handle("GET /v1/{collection}", s.authed(http.HandlerFunc(s.listOrWatch)))
	mux.Handle("POST /v1/{collection}", s.authed(http.HandlerFunc(s.createHandler)))
	mux.Handle("GET /v1/{collection}/{id}", s.authed(http.HandlerFunc(s.getHandler)))
	mux.Handle("PUT /v1/{collection}/{id}", s.authed(http.HandlerFunc(s.updateHandler)))
	mux.Handle("PATCH /v1/{collection}/{id}", s.authed(http.HandlerFunc(s.updateHandler)))
	mux.Handle("PUT /v1/{collection}/{id}/status", s.authed(http.HandlerFunc(s.updateHandler)))
	mux.Handle("PATCH /v1/{collection}/{id}/status", s.authed(http.HandlerFunc(s.updateHandler)))
	mux.Handle("DELETE /v1/{collection}/{id}", s.authed(http.HandlerFunc(s.deleteHandler)))
	mux.Handle("GET /v1/certificates/{id}/key", s.authed(http.HandlerFunc(s.certificateKey)))
	mux.Handle("GET /v1/containers/{id}/secrets", s.authed(http.HandlerFunc(s.containerSecrets)))
	mux.Handle("POST /v1/tokenreviews", s.authed(http.HandlerFunc(s.tokenReview)))
	mux.Handle("GET /v1/images", s.authed(http.HandlerFunc(s.getImages)))
	mux.Handle("PUT /v1/images", s.authed(http.HandlerFunc(s.putImage)))
	return s.instrument(mux)
}

// instrument counts and times requests and turns mux's own 404/405 into
// JSON errors.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		isList := r.Method == http.MethodGet && strings.Count(strings.TrimSuffix(r.URL.Path, "/"), "/") == 2
		if r.URL.Query().Get("watch") == "" && r.URL.Path != "/v1/subscribe" && !strings.HasPrefix(r.URL.Path, "/debug/") && !isList {
			// Every store call of a plain request has a deadline: with the
			// store away, clients get a 503 in seconds, not a hung request.
			// (A list may take longer as a whole; each of its pages has the
			// deadline instead, see store.List.)
			ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		// Label values come from a fixed set: made-up methods and paths
		// must not grow the series without bound.
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions:
		default:
			method = "other"
		}
		s.metrics.requests.WithLabelValues(method, route, strconv.Itoa(rec.status)).Inc()
		if rec.cause != nil {
			s.log.Warn("request failed in the store", "method", method, "path", r.URL.Path, "status", rec.status, "err", rec.cause)
		}
		if r.URL.Query().Get("watch") == "" && route != "GET /v1/subscribe" {
			s.metrics.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	cause  error // of a 5xx answer, for the log
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r.Context(), r)
		if err != nil {
			if err.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="drover"`)
			}
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
	})
}

func adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := principalFrom(r.Context()); p.Role != api.RoleAdmin {
			writeError(w, forbidden(p, "profile the server"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeError(w http.ResponseWriter, e *api.Error) {
	if rec, ok := w.(*statusRecorder); ok && e.Cause != nil {
		rec.cause = e.Cause
	}
	w.Header().Set("Content-Type", "application/json")
	if e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "2")
	}
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(e)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
	w.Write([]byte("\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.st.Cli.Get(ctx, s.st.Prefix+"ready"); err != nil {
		s.log.Warn("readyz: the store does not answer", "err", err)
		http.Error(w, store.Unavailable(err).Message, http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	type link struct {
		Collection string `json:"collection"`
		Type       string `json:"type"`
		URL        string `json:"url"`
	}
	var out []link
	for _, k := range api.Kinds {
		out = append(out, link{k.Collection, k.Type, "/v1/" + k.Collection})
	}
	b, _ := json.Marshal(map[string]any{"type": "apiRoot", "version": "v1", "collections": out})
	writeRaw(w, http.StatusOK, b)
}

// kindFor resolves the {collection} path segment and checks read access.
func kindFor(w http.ResponseWriter, r *http.Request) (api.Kind, *auth.Principal, bool) {
	coll := r.PathValue("collection")
	kind, ok := api.KindByCollection(coll)
	if !ok {
		var names []string
		for _, k := range api.Kinds {
			names = append(names, k.Collection)
		}
		writeError(w, api.NewError(http.StatusNotFound, api.CodeNotFound, "", "no collection %q; collections are %s", coll, strings.Join(names, ", ")))
		return kind, nil, false
	}
	p := principalFrom(r.Context())
	if !p.CanRead(coll) {
		verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "update", http.MethodDelete: "delete"}[r.Method]
		if verb == "" {
			verb = "read"
		}
		writeError(w, forbidden(p, verb+" "+coll))
		return kind, nil, false
	}
	return kind, p, true
}

// filterFromQuery builds the list/watch filter from query parameters.
func filterFromQuery(r *http.Request, p *auth.Principal) (*events.Filter, *api.Error) {
	q := r.URL.Query()
	// The principal's read rights apply to every list and stream.
	f := &events.Filter{StackID: q.Get("stackId"), ServiceID: q.Get("serviceId"), HostID: q.Get("hostId"), Scope: p}
	sel, err := api.ParseSelector(q.Get("labelSelector"))
	if err != nil {
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "labelSelector", "labelSelector: %v", err)
	}
	f.Selector = sel
	return f, nil
}

// trivial says whether a list needs no filtering at all.
func trivial(f *events.Filter) bool {
	return (f.Scope == nil || f.Scope.OwnHost() == "") && f.StackID == "" && f.ServiceID == "" && f.HostID == "" && f.Selector.Empty()
}

func (s *Server) listOrWatch(w http.ResponseWriter, r *http.Request) {
	kind, p, ok := kindFor(w, r)
	if !ok {
		return
	}
	f, aerr := filterFromQuery(r, p)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if r.URL.Query().Get("watch") == "true" {
		f.Collections = map[string]bool{kind.Collection: true}
		s.watchNDJSON(w, r, f)
		return
	}
	// Stream the list: objects go out as they come from the store, already
	// JSON, so 100,000 objects never sit decoded in memory.
	bw := bufio.NewWriterSize(w, 64<<10)
	started := false
	start := func() {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		bw.WriteString(`{"type":"collection","resourceType":"` + kind.Type + `","data":[`)
		started = true
	}
	first := true
	trivial := trivial(f)
	name := r.URL.Query().Get("name")
	rev, err := s.st.List(r.Context(), s.st.ObjectPrefix(kind.Collection), false, func(key string, value []byte, modRev int64) error {
		if !trivial || name != "" {
			var fl struct {
				events.Fields
				Name string `json:"name"`
			}
			if err := json.Unmarshal(value, &fl); err != nil {
				return err
			}
			id := key[strings.LastIndexByte(key, '/')+1:]
			if !f.Matches(kind.Collection, id, &fl.Fields) || (name != "" && fl.Name != name) {
				return nil
			}
		}
		if !started {
			start()
		}
		if !first {
			bw.WriteByte(',')
		}
		first = false
		store.WriteWithRevision(bw, value, modRev)
		return nil
	})
	if err != nil {
		if !started {
			writeError(w, store.Unavailable(err))
			return
		}
		// Headers are gone: break the JSON so no client mistakes a partial list for a whole one.
		bw.WriteString(`]}{"error":"list interrupted"}`)
		bw.Flush()
		s.log.Error("list interrupted", "collection", kind.Collection, "err", err)
		return
	}
	if !started {
		start()
	}
	bw.WriteString(`],"revision":` + strconv.FormatInt(rev, 10) + "}\n")
	bw.Flush()
}

func (s *Server) getHandler(w http.ResponseWriter, r *http.Request) {
	kind, p, ok := kindFor(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	raw, rev, err := s.st.Get(r.Context(), kind.Collection, id)
	if err == store.ErrNotFound {
		writeError(w, api.NewError(http.StatusNotFound, api.CodeNotFound, "", "%s %q not found", kind.Type, id))
		return
	} else if err != nil {
		writeError(w, store.Unavailable(err))
		return
	}
	if p.Role == api.RoleAgent {
		var fl events.Fields
		json.Unmarshal(raw, &fl)
		if !p.CanSee(kind.Collection, id, fl.Spec.HostID) {
			writeError(w, forbidden(p, "read "+kind.Type+" "+id))
			return
		}
	}
	writeRaw(w, http.StatusOK, store.WithRevision(raw, rev))
}

// readBody reads a size-limited body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *api.Error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, api.NewError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "", "request body is larger than %d bytes", s.opts.MaxBodyBytes)
		}
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "reading body: %v", err)
	}
	return b, nil
}

// serverFields are set by the server; clients may echo them back but not
// choose them.
func stripServerFields(m map[string]any) (int64, *api.Error) {
	var rev int64
	if v, ok := m["revision"]; ok && v != nil {
		n, ok := v.(json.Number)
		if !ok {
			return 0, typeError("revision", "an integer", v)
		}
		i, err := n.Int64()
		if err != nil || i < 0 {
			return 0, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "revision", "revision must be a non-negative integer")
		}
		rev = i
	}
	// The times are the server's: a body may echo them, but what is not a
	// time is a mistake worth saying, not something to drop silently.
	for _, k := range []string{"createdAt", "updatedAt"} {
		if v, ok := m[k]; ok && v != nil {
			if aerr := checkShape(reflect.TypeOf(time.Time{}), v, k); aerr != nil {
				return 0, aerr
			}
		}
	}
	delete(m, "revision")
	delete(m, "createdAt")
	delete(m, "updatedAt")
	return rev, nil
}

func (s *Server) createHandler(w http.ResponseWriter, r *http.Request) {
	kind, p, ok := kindFor(w, r)
	if !ok {
		return
	}
	if !p.CanWrite(kind.Collection, r.Method, false) {
		writeError(w, forbidden(p, "create "+kind.Collection))
		return
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	obj, aerr := decodeCreate(kind, body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var once *store.Idempotency
	if h := r.Header.Get("Idempotency-Key"); h != "" {
		if serverOwnedStatus[kind.Collection] && kind.Collection != "certificates" {
			writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "Idempotency-Key",
				"Idempotency-Key is not taken for %s: their secret is shown once, so a replay could not show it; list them to see whether the first request made one", kind.Collection))
			return
		}
		if once, aerr = s.st.NewIdempotency(p.AccessKey, h, body); aerr != nil {
			writeError(w, aerr)
			return
		}
		rec, aerr := s.st.Replayed(r.Context(), once)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		if rec != nil {
			s.replay(w, r, rec)
			return
		}
	}
	stored, rev, reveal, aerr := s.createWithSecrets(r.Context(), kind, obj, once)
	if store.IsReplay(aerr) {
		// The same key, sent twice at once: the other one won.
		if rec, aerr := s.st.Replayed(r.Context(), once); aerr != nil || rec == nil {
			writeError(w, store.Unavailable(fmt.Errorf("idempotency record vanished: %v", aerr)))
		} else {
			s.replay(w, r, rec)
		}
		return
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if reveal != nil {
		// The one response that shows the secret.
		obj.GetMeta().Revision = rev
		reveal(obj)
		b, _ := json.Marshal(obj)
		writeRaw(w, http.StatusCreated, b)
		return
	}
	writeRaw(w, http.StatusCreated, store.WithRevision(stored, rev))
}

// replay answers a create whose Idempotency-Key was used before with the
// object the first request made, as it is now.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, rec *store.IdempotencyRecord) {
	raw, rev, err := s.st.Get(r.Context(), rec.Collection, rec.ID)
	if err == store.ErrNotFound {
		writeError(w, api.NewError(http.StatusConflict, api.CodeConflict, "Idempotency-Key",
			"the request with this Idempotency-Key created %s %s, which has been deleted since", strings.TrimSuffix(rec.Collection, "s"), rec.ID))
		return
	} else if err != nil {
		writeError(w, store.Unavailable(err))
		return
	}
	w.Header().Set("Idempotency-Replayed", "true")
	writeRaw(w, http.StatusCreated, store.WithRevision(raw, rev))
}

// createWithSecrets creates obj, handling the kinds that carry secrets. The
// returned reveal, if any, puts the secret into the response object.
func (s *Server) createWithSecrets(ctx context.Context, kind api.Kind, obj api.Object, once *store.Idempotency) ([]byte, int64, func(api.Object), *api.Error) {
	switch o := obj.(type) {
	case *api.APIKey:
		o.ID = store.NewID(kind.IDPrefix)
		secret := auth.NewSecret()
		o.Status = api.APIKeyStatus{AccessKey: o.ID}
		stored, rev, err := s.st.Create(ctx, kind, o, []byte(auth.HashSecret(secret)))
		return stored, rev, func(x api.Object) { x.(*api.APIKey).Status.SecretKey = secret }, err
	case *api.RegistrationToken:
		o.ID = store.NewID(kind.IDPrefix)
		secret := auth.NewSecret()
		o.Status = api.RegistrationTokenStatus{}
		stored, rev, err := s.st.Create(ctx, kind, o, []byte(auth.HashSecret(secret)))
		return stored, rev, func(x api.Object) { x.(*api.RegistrationToken).Status.Token = o.ID + "." + secret }, err
	case *api.Certificate:
		if o.Spec.Key == "" {
			return nil, 0, nil, required("spec.key", "the PEM private key of spec.cert")
		}
		st, err := certificateStatus(o.Spec.Cert, o.Spec.Key)
		if err != nil {
			return nil, 0, nil, err
		}
		key := o.Spec.Key
		o.Spec.Key, o.Status = "", st
		stored, rev, aerr := s.st.CreateOnce(ctx, kind, o, []byte(key), once)
		return stored, rev, nil, aerr
	}
	stored, rev, err := s.st.CreateOnce(ctx, kind, obj, nil, once)
	return stored, rev, nil, err
}

func (s *Server) updateHandler(w http.ResponseWriter, r *http.Request) {
	kind, p, ok := kindFor(w, r)
	if !ok {
		return
	}
	statusOnly := strings.HasSuffix(r.Pattern, "/status")
	if !p.CanWrite(kind.Collection, r.Method, statusOnly) {
		what := "update " + kind.Collection
		if statusOnly {
			what = "update the status of " + kind.Collection
		} else if p.Role == api.RoleAgent {
			what += " (agents write only /status)"
		}
		writeError(w, forbidden(p, what))
		return
	}
	if statusOnly && serverOwnedStatus[kind.Collection] {
		writeError(w, api.NewError(http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, "status", "the status of %s is kept by the server", kind.Collection))
		return
	}
	id := r.PathValue("id")
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	patch, aerr := decodeBody(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	expectRev, aerr := stripServerFields(patch)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	stored, rev, aerr := s.st.Update(r.Context(), kind, id, expectRev, func(cur api.Object) (api.Object, []byte, *api.Error) {
		if p.Role == api.RoleAgent {
			if !p.CanSee(kind.Collection, id, hostOf(cur)) {
				return nil, nil, forbidden(p, "update "+kind.Type+" "+id)
			}
		}
		m := patch
		var aerr *api.Error
		if r.Method == http.MethodPatch || statusOnly {
			curJSON, _ := json.Marshal(cur)
			var base map[string]any
			dec := json.NewDecoder(strings.NewReader(string(curJSON)))
			dec.UseNumber()
			dec.Decode(&base)
			stripServerFields(base)
			if statusOnly {
				// Only the body's status counts; a PUT replaces the status whole.
				st, _ := patch["status"]
				if r.Method == http.MethodPut {
					base["status"] = st
					m = base
				} else {
					p := map[string]any{"status": st}
					mergeConditions(base, p)
					if m, aerr = mergePatch(base, p); aerr != nil {
						return nil, nil, aerr
					}
				}
			} else if m, aerr = mergePatch(base, patch); aerr != nil {
				return nil, nil, aerr
			}
		}
		next, aerr := decodeInto(kind, m)
		if aerr != nil {
			return nil, nil, aerr
		}
		if statusOnly {
			out := onlyStatus(kind, cur, next)
			if p.Role == api.RoleAgent && kind.Collection == "hosts" {
				if aerr := s.checkAgentHostStatus(p, cur.(*api.Host), out.(*api.Host)); aerr != nil {
					return nil, nil, aerr
				}
			}
			return out, nil, nil
		}
		keepStatus(cur, next)
		carryServerMeta(cur.GetMeta(), next.GetMeta())
		// Defaults first, so a body that leaves one out is no spec change.
		if next.GetMeta().ID == "" {
			next.GetMeta().ID = cur.GetMeta().ID
		}
		normalize(kind.Collection, next)
		if aerr := checkFinalizers(cur.GetMeta(), next.GetMeta()); aerr != nil {
			return nil, nil, aerr
		}
		if aerr := checkManaged(r, p, cur, next); aerr != nil {
			return nil, nil, aerr
		}
		return s.carrySecrets(kind, cur, next)
	})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if stored == nil {
		// The last finalizer went: the object is gone.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeRaw(w, http.StatusOK, store.WithRevision(stored, rev))
}

// hostOf is the host an object is tied to, for an agent's rights.
func hostOf(obj api.Object) string {
	switch o := obj.(type) {
	case *api.Container:
		return o.Spec.HostID
	case *api.Lease:
		return o.Spec.HostID
	}
	return ""
}

// carrySecrets keeps what must not change through a PUT or PATCH: shown-once
// secrets stay unshown, a certificate keeps its key unless a new one comes.
func (s *Server) carrySecrets(kind api.Kind, cur, next api.Object) (api.Object, []byte, *api.Error) {
	switch n := next.(type) {
	case *api.Stack:
		c := cur.(*api.Stack)
		n.Status.PreviousSpec = c.Status.PreviousSpec
		if !api.SameJSON(c.Spec, n.Spec) {
			prev := c.Spec
			n.Status.PreviousSpec = &prev
		}
	case *api.APIKey:
		c := cur.(*api.APIKey)
		n.Status = c.Status
		if n.Spec.Role != c.Spec.Role || n.Spec.HostID != c.Spec.HostID {
			return nil, nil, invalid("spec.Role", "an API key's role and host cannot change; create a new key")
		}
	case *api.RegistrationToken:
		n.Status = cur.(*api.RegistrationToken).Status
	case *api.Certificate:
		if n.Spec.Key == "" {
			if n.Spec.Cert != cur.(*api.Certificate).Spec.Cert {
				return nil, nil, required("spec.key", "a new certificate needs its private key")
			}
			n.Status = cur.(*api.Certificate).Status
			return next, nil, nil
		}
		st, err := certificateStatus(n.Spec.Cert, n.Spec.Key)
		if err != nil {
			return nil, nil, err
		}
		key := n.Spec.Key
		n.Spec.Key, n.Status = "", st
		return next, []byte(key), nil
	}
	return next, nil, nil
}

func (s *Server) deleteHandler(w http.ResponseWriter, r *http.Request) {
	kind, p, ok := kindFor(w, r)
	if !ok {
		return
	}
	if !p.CanWrite(kind.Collection, r.Method, false) {
		writeError(w, forbidden(p, "delete "+kind.Collection))
		return
	}
	var expectRev int64
	if v := r.URL.Query().Get("revision"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "revision", "revision must be an integer, got %q", v))
			return
		}
		expectRev = n
	}
	raw, rev, gone, aerr := s.st.Remove(r.Context(), kind, r.PathValue("id"), expectRev)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	// A deleted key stops working on this server before the answer goes
	// out, not when the hub gets to the event (other servers: milliseconds).
	s.auth.Invalidate(kind.Collection, r.PathValue("id"), rev)
	if !gone {
		// Marked for deletion; the garbage collector and finalizers finish it.
		writeRaw(w, http.StatusAccepted, store.WithRevision(raw, rev))
		return
	}
	writeRaw(w, http.StatusOK, store.WithRevision(raw, rev))
}

// Hijack lets WebSocket upgrades through the instrumentation wrapper.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	r.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

// certificateKey serves GET /v1/certificates/<id>/key: the private key of a
// certificate, opened from its sealed copy, as PEM. Only admin and service
// keys may read it (the components that install certificates: load
// balancers, the Kubernetes stack); the object itself never carries it.
func (s *Server) certificateKey(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p.Role != api.RoleAdmin && p.Role != api.RoleService {
		writeError(w, forbidden(p, "read certificate private keys"))
		return
	}
	id := r.PathValue("id")
	key, err := s.st.Secret(r.Context(), "certificates", id)
	if err == store.ErrNotFound {
		writeError(w, api.NewError(http.StatusNotFound, api.CodeNotFound, "", "certificate %q not found", id))
		return
	} else if err != nil {
		writeError(w, store.Unavailable(err))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(key)
}

// labelManaged marks a service its compose stack's files declare (the
// stack controller's label).
const labelManaged = "io.drover.stack.managed"

// checkManaged refuses a person's change to the spec of a service a
// compose stack declares: the stack controller would put the file's spec
// back a moment later, and the change would be lost without a word. The
// files are where it belongs; ?force=true says the caller knows.
func checkManaged(r *http.Request, p *auth.Principal, cur, next api.Object) *api.Error {
	c, ok := cur.(*api.Service)
	if !ok || p.Role != api.RoleAdmin || c.Labels[labelManaged] != "true" || r.URL.Query().Get("force") == "true" {
		return nil
	}
	n := next.(*api.Service)
	if reflect.DeepEqual(c.Spec, n.Spec) {
		return nil
	}
	return api.NewError(http.StatusConflict, api.CodeConflict, "spec",
		"service %s is managed by its stack's compose file (stack %s): the stack would put this change back; edit the file and run drover stack up (or send ?force=true)", c.Name, c.Spec.StackID)
}
