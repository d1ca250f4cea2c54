// Package client is the Go client of the drover engine API: typed CRUD for
// every collection, the event stream, and a watch cache (see Cache) that
// every drover component builds on.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/drover/drover/api"
)

// Client talks to one engine.
type Client struct {
	base      string
	accessKey string
	secretKey string
	http      *http.Client
	// RequestTimeout bounds every call but streams (default 30s).
	RequestTimeout time.Duration
	// CreateRetries is how many times Create sends a create again, with the
	// same Idempotency-Key, after no answer or a 503 (default 4; -1: never).
	CreateRetries int
}

// New returns a client of the engine at url (e.g. http://127.0.0.1:8080).
func New(baseURL, accessKey, secretKey string) *Client {
	return &Client{
		base:           strings.TrimRight(baseURL, "/"),
		accessKey:      accessKey,
		secretKey:      secretKey,
		http:           &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}},
		RequestTimeout: 30 * time.Second,
	}
}

// WithHTTPClient replaces the HTTP client (for TLS settings, say).
func (c *Client) WithHTTPClient(h *http.Client) *Client { c.http = h; return c }

// URL is the engine's base URL.
func (c *Client) URL() string { return c.base }

// FromCredentialsFile reads a credentials.json ({"url","accessKey","secretKey"}).
func FromCredentialsFile(path string) (*Client, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client: reading credentials: %w", err)
	}
	var cr api.Credentials
	if err := json.Unmarshal(b, &cr); err != nil {
		return nil, fmt.Errorf("client: %s is not a credentials file: %w", path, err)
	}
	if cr.URL == "" || cr.AccessKey == "" || cr.SecretKey == "" {
		return nil, fmt.Errorf("client: %s lacks url, accessKey or secretKey", path)
	}
	return New(cr.URL, cr.AccessKey, cr.SecretKey), nil
}

// FromEnv reads DROVER_URL, DROVER_ACCESS_KEY and DROVER_SECRET_KEY, or
// DROVER_CREDENTIALS naming a credentials file.
func FromEnv() (*Client, error) {
	if f := os.Getenv("DROVER_CREDENTIALS"); f != "" {
		return FromCredentialsFile(f)
	}
	u, ak, sk := os.Getenv("DROVER_URL"), os.Getenv("DROVER_ACCESS_KEY"), os.Getenv("DROVER_SECRET_KEY")
	if u == "" || ak == "" || sk == "" {
		return nil, errors.New("client: set DROVER_CREDENTIALS, or DROVER_URL, DROVER_ACCESS_KEY and DROVER_SECRET_KEY")
	}
	return New(u, ak, sk), nil
}

// do sends a request and decodes a JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	return c.doWith(ctx, method, path, body, out, nil)
}

// doWith is do with extra request headers.
func (c *Client) doWith(ctx context.Context, method, path string, body any, out any, hdr http.Header) error {
	if c.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.RequestTimeout)
		defer cancel()
	}
	resp, err := c.sendWith(ctx, method, path, body, "", hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if rb, ok := out.(*rawBody); ok {
		b, err := io.ReadAll(resp.Body)
		*rb.b = b
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: decoding %s %s: %w", method, path, err)
	}
	return nil
}

// rawBody asks do for the undecoded body.
type rawBody struct{ b *json.RawMessage }

func (c *Client) send(ctx context.Context, method, path string, body any, contentType string) (*http.Response, error) {
	return c.sendWith(ctx, method, path, body, contentType, nil)
}

func (c *Client) sendWith(ctx context.Context, method, path string, body any, contentType string, hdr http.Header) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		if raw, ok := body.(json.RawMessage); ok {
			rd = bytes.NewReader(raw)
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				return nil, fmt.Errorf("client: encoding body: %w", err)
			}
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.accessKey != "" {
		req.SetBasicAuth(c.accessKey, c.secretKey)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	return resp, nil
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if json.Unmarshal(b, &e) == nil && e.Status != 0 {
		return &e
	}
	return &api.Error{Type: "error", Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(b))}
}

// Register presents a registration token and gets a host and its agent key.
func (c *Client) Register(ctx context.Context, req api.RegisterRequest) (*api.RegisterResponse, error) {
	var out api.RegisterResponse
	if err := c.do(ctx, http.MethodPost, "/v1/hosts/register", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CertificateKey reads a certificate's private key (PEM; admin and service
// keys only).
func (c *Client) CertificateKey(ctx context.Context, id string) ([]byte, error) {
	var b json.RawMessage
	if err := c.do(ctx, http.MethodGet, "/v1/certificates/"+url.PathEscape(id)+"/key", nil, &rawBody{&b}); err != nil {
		return nil, err
	}
	return b, nil
}

// ContainerSecrets reads what a container's labels ask to be handed (an
// engine key, certificates with their keys): for the agent of its host.
func (c *Client) ContainerSecrets(ctx context.Context, id string) (*api.ContainerSecrets, error) {
	var out api.ContainerSecrets
	if err := c.do(ctx, http.MethodGet, "/v1/containers/"+url.PathEscape(id)+"/secrets", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ContainerCertificates reads only the certificates a container's labels
// ask for (its engine key is left alone): what an agent rereads after the
// certificates change.
func (c *Client) ContainerCertificates(ctx context.Context, id string) ([]api.SecretCertificate, error) {
	var out api.ContainerSecrets
	if err := c.do(ctx, http.MethodGet, "/v1/containers/"+url.PathEscape(id)+"/secrets?only=certificates", nil, &out); err != nil {
		return nil, err
	}
	return out.Certificates, nil
}

// ImageInfo describes an image the engine holds (see apiserver/images.go).
type ImageInfo struct {
	Name   string    `json:"name"`
	Size   int64     `json:"size"`
	SHA256 string    `json:"sha256"`
	Stored time.Time `json:"storedAt"`
}

// PushImage uploads an image archive (what docker save writes) as ref.
// Only ctx bounds it: images take longer than requests.
func (c *Client) PushImage(ctx context.Context, ref string, archive io.Reader) (*ImageInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/v1/images?name="+url.QueryEscape(ref), archive)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(c.accessKey, c.secretKey)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: pushing %s: %w", ref, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, readError(resp)
	}
	var info ImageInfo
	return &info, json.NewDecoder(resp.Body).Decode(&info)
}

// ImageArchive opens the archive of an image the engine holds; the caller
// closes it. A missing image is a 404 (api.IsNotFound).
func (c *Client) ImageArchive(ctx context.Context, ref string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/images?name="+url.QueryEscape(ref), nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(c.accessKey, c.secretKey)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: fetching image %s: %w", ref, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp.Body, nil
}

// Images lists the images the engine holds.
func (c *Client) Images(ctx context.Context) ([]ImageInfo, error) {
	var out struct{ Data []ImageInfo }
	return out.Data, c.do(ctx, http.MethodGet, "/v1/images", nil, &out)
}

// Ping checks /healthz.
func (c *Client) Ping(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Typed collections.
func (c *Client) Hosts() *Resource[api.Host]       { return &Resource[api.Host]{c, "hosts"} }
func (c *Client) Stacks() *Resource[api.Stack]     { return &Resource[api.Stack]{c, "stacks"} }
func (c *Client) Services() *Resource[api.Service] { return &Resource[api.Service]{c, "services"} }
func (c *Client) Containers() *Resource[api.Container] {
	return &Resource[api.Container]{c, "containers"}
}
func (c *Client) Networks() *Resource[api.Network] { return &Resource[api.Network]{c, "networks"} }
func (c *Client) Certificates() *Resource[api.Certificate] {
	return &Resource[api.Certificate]{c, "certificates"}
}
func (c *Client) APIKeys() *Resource[api.APIKey] { return &Resource[api.APIKey]{c, "apikeys"} }
func (c *Client) RegistrationTokens() *Resource[api.RegistrationToken] {
	return &Resource[api.RegistrationToken]{c, "registrationtokens"}
}

// Resource is one collection, typed.
type Resource[T any] struct {
	c          *Client
	collection string
}

// Collection is the URL segment of the resource.
func (r *Resource[T]) Collection() string { return r.collection }

// ListOptions filter a list or a watch.
type ListOptions struct {
	LabelSelector string
	StackID       string
	ServiceID     string
	HostID        string
	Name          string
}

func (o ListOptions) values() url.Values {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("labelSelector", o.LabelSelector)
	set("stackId", o.StackID)
	set("serviceId", o.ServiceID)
	set("hostId", o.HostID)
	set("name", o.Name)
	return v
}

// List returns the matching objects and the store revision they were read at.
func (r *Resource[T]) List(ctx context.Context, opts ListOptions) ([]T, int64, error) {
	q := opts.values().Encode()
	path := "/v1/" + r.collection
	if q != "" {
		path += "?" + q
	}
	var body json.RawMessage
	if err := r.c.do(ctx, http.MethodGet, path, nil, &rawBody{&body}); err != nil {
		return nil, 0, err
	}
	out, err := decodeList[T](body)
	if err != nil {
		return nil, 0, fmt.Errorf("client: decoding %s list: %w", r.collection, err)
	}
	return out.Data, out.Revision, nil
}

// Get reads one object.
func (r *Resource[T]) Get(ctx context.Context, id string) (*T, error) {
	var out T
	if err := r.c.do(ctx, http.MethodGet, "/v1/"+r.collection+"/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Create stores a new object and returns it as stored (with id and revision).
//
// It sends an Idempotency-Key, and when no answer comes or the answer is a
// 503 (the store was away, or could not confirm the write: code Unknown),
// sends the create again with the same key, up to CreateRetries times within
// ctx: the engine answers a repeat with the object the first try made, so a
// create happens once however many times it is sent. (API keys and
// registration tokens, whose secret is shown once, are sent once.)
func (r *Resource[T]) Create(ctx context.Context, obj *T) (*T, error) {
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("client: encoding body: %w", err)
	}
	retries := r.c.CreateRetries
	if retries == 0 {
		retries = 4
	}
	var hdr http.Header
	if r.collection == "apikeys" || r.collection == "registrationtokens" {
		retries = 0
	} else {
		hdr = http.Header{"Idempotency-Key": {newIdempotencyKey()}}
	}
	wait := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		var out T
		err := r.c.doWith(ctx, http.MethodPost, "/v1/"+r.collection, json.RawMessage(body), &out, hdr)
		if err == nil {
			return &out, nil
		}
		var ae *api.Error
		retryable := !errors.As(err, &ae) || ae.Status == http.StatusServiceUnavailable
		if attempt >= retries || !retryable || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, err
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// newIdempotencyKey is 128 random bits.
func newIdempotencyKey() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Update replaces an object. If obj carries a revision that is no longer
// current, it fails with a 409 (api.IsConflict).
func (r *Resource[T]) Update(ctx context.Context, id string, obj *T) (*T, error) {
	var out T
	if err := r.c.do(ctx, http.MethodPut, "/v1/"+r.collection+"/"+url.PathEscape(id), obj, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Patch applies a JSON merge patch (RFC 7386); patch is anything that
// encodes to a JSON object. A "revision" in it is a precondition.
func (r *Resource[T]) Patch(ctx context.Context, id string, patch any) (*T, error) {
	var out T
	if c := r.c.RequestTimeout; c > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c)
		defer cancel()
	}
	resp, err := r.c.send(ctx, http.MethodPatch, "/v1/"+r.collection+"/"+url.PathEscape(id), patch, "application/merge-patch+json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, readError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: decoding patch answer: %w", err)
	}
	return &out, nil
}

// Delete removes an object (and everything that references it) and returns
// it as it was.
func (r *Resource[T]) Delete(ctx context.Context, id string) (*T, error) {
	var out T
	if err := r.c.do(ctx, http.MethodDelete, "/v1/"+r.collection+"/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Event is one decoded frame of a watch.
type Event[T any] struct {
	Name     string // api.EventChange, api.EventRemove, api.EventResync, api.EventPing, api.EventError
	Revision int64
	Object   *T
	Message  string
}

// Watcher reads a watch stream. Close it when done.
type Watcher[T any] struct {
	body   io.ReadCloser
	rd     *bufio.Reader
	cancel context.CancelFunc
	idle   *time.Timer
	limit  time.Duration
}

// Watch opens the newline-delimited JSON stream of changes after since
// (0: from now). If no frame (not even a ping) comes for idleTimeout, the
// stream is closed so the caller can reconnect; 0 means 30s.
func (r *Resource[T]) Watch(ctx context.Context, since int64, opts ListOptions, idleTimeout time.Duration) (*Watcher[T], error) {
	if idleTimeout == 0 {
		idleTimeout = 30 * time.Second
	}
	q := opts.values()
	q.Set("watch", "true")
	if since > 0 {
		q.Set("since", strconv.FormatInt(since, 10))
	}
	ctx, cancel := context.WithCancel(ctx)
	resp, err := r.c.send(ctx, http.MethodGet, "/v1/"+r.collection+"?"+q.Encode(), nil, "")
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer cancel()
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	w := &Watcher[T]{body: resp.Body, rd: bufio.NewReaderSize(resp.Body, 64<<10), cancel: cancel, limit: idleTimeout}
	w.idle = time.AfterFunc(idleTimeout, cancel)
	return w, nil
}

// FrameError is a frame that arrived whole but could not be decoded. The
// stream stays usable: the next call to Next reads the following frame.
type FrameError struct {
	Name     string // empty if the frame is not JSON at all
	Revision int64  // 0 if unknown
	Err      error
	frame    []byte
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("client: undecodable watch frame (name %q, revision %d): %v", e.Name, e.Revision, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }

// Next returns the next event; pings are returned too, so callers can tell
// a live stream from a dead one. A frame that cannot be decoded is returned
// as a *FrameError, after which the stream can still be read.
func (w *Watcher[T]) Next() (Event[T], error) {
	var line []byte
	for len(bytes.TrimSpace(line)) == 0 { // blank lines are no frames
		var err error
		line, err = w.rd.ReadBytes('\n')
		if err != nil {
			// A line without its newline is a frame cut off by a broken
			// stream, not a bad frame: the caller must reconnect, not skip it.
			return Event[T]{}, fmt.Errorf("client: watch stream ended: %w", err)
		}
		w.idle.Reset(w.limit)
	}
	var raw api.Event
	if err := json.Unmarshal(line, &raw); err != nil {
		return Event[T]{}, &FrameError{Err: err, frame: line}
	}
	ev := Event[T]{Name: raw.Name, Revision: raw.Revision, Message: raw.Message}
	if len(raw.Resource) > 0 {
		ev.Object = new(T)
		if err := json.Unmarshal(raw.Resource, ev.Object); err != nil {
			return Event[T]{}, &FrameError{Name: raw.Name, Revision: raw.Revision, Err: err, frame: line}
		}
	}
	return ev, nil
}

// Close ends the stream.
func (w *Watcher[T]) Close() {
	w.idle.Stop()
	w.cancel()
	w.body.Close()
}

// TokenUser is the engine's answer about an engine key given as a
// Kubernetes bearer token (see apiserver/tokenreview.go).
type TokenUser struct {
	Authenticated bool
	Username, UID string
	Groups        []string
	Error         string // why it is not a key, when not authenticated
}

// ReviewToken asks the engine who holds token ("accessKey:secretKey"),
// through the same TokenReview endpoint kube-apiserver's webhook calls: a
// revoked key is refused at once. The caller needs an admin or service key.
func (c *Client) ReviewToken(ctx context.Context, token string) (*TokenUser, error) {
	type userInfo struct {
		Username string   `json:"username"`
		UID      string   `json:"uid"`
		Groups   []string `json:"groups"`
	}
	type review struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Token string `json:"token"`
		} `json:"spec"`
		Status struct {
			Authenticated bool     `json:"authenticated"`
			User          userInfo `json:"user"`
			Error         string   `json:"error"`
		} `json:"status"`
	}
	in := review{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"}
	in.Spec.Token = token
	var out review
	if err := c.do(ctx, http.MethodPost, "/v1/tokenreviews", in, &out); err != nil {
		return nil, err
	}
	return &TokenUser{Authenticated: out.Status.Authenticated, Username: out.Status.User.Username, UID: out.Status.User.UID,
		Groups: out.Status.User.Groups, Error: out.Status.Error}, nil
}
