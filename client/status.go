package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/drover/drover/api"
)

// Leases is the collection of host liveness and controller leadership leases.
func (c *Client) Leases() *Resource[api.Lease] { return &Resource[api.Lease]{c, "leases"} }

// UpdateStatus replaces an object's status through the /status subresource;
// nothing else of the object changes. A revision in obj is a precondition.
func (r *Resource[T]) UpdateStatus(ctx context.Context, id string, obj *T) (*T, error) {
	var out T
	if err := r.c.do(ctx, http.MethodPut, "/v1/"+r.collection+"/"+url.PathEscape(id)+"/status", obj, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchStatus merges patch (which encodes to {"status": {...}}, optionally
// with a "revision" precondition) into the object's status. Conditions are
// merged by type, so each controller sends only the fields and conditions
// it owns.
func (r *Resource[T]) PatchStatus(ctx context.Context, id string, patch any) (*T, error) {
	if c := r.c.RequestTimeout; c > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c)
		defer cancel()
	}
	resp, err := r.c.send(ctx, http.MethodPatch, "/v1/"+r.collection+"/"+url.PathEscape(id)+"/status", patch, "application/merge-patch+json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, readError(resp)
	}
	var out T
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: decoding status patch answer: %w", err)
	}
	return &out, nil
}

// Clone returns a client with the same engine and key and its own HTTP
// client, so a transport can be wrapped for one component alone.
func (c *Client) Clone() *Client {
	cp := *c
	h := *c.http
	cp.http = &h
	return &cp
}

// WrapTransport wraps the client's HTTP transport (to count or trace
// requests).
func (c *Client) WrapTransport(wrap func(http.RoundTripper) http.RoundTripper) {
	rt := c.http.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	c.http.Transport = wrap(rt)
}
