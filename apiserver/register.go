package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
	"github.com/drover/drover/store"
)

// register serves POST /v1/hosts/register: an agent presents a registration
// token (in the body or as "Authorization: Bearer TOKEN") with its name,
// address and labels, and gets its host and an agent key scoped to that
// host; the host's earlier agent keys are revoked.
//
// A host that exists is not handed to whoever knows a token: re-registering
// it needs that host's current agent key (HTTP Basic, as the agent keeps it
// in its state directory), a token issued for exactly that name
// (spec.hostNamePattern equal to it), or an admin key. A token may be
// limited in uses, time and host names (api.RegistrationTokenSpec), and
// deleting it revokes it.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	req, aerr := decodeRegister(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	// Who asks: an API key, or only a token.
	var caller *auth.Principal
	if ak, sk, ok := auth.Credentials(r); ok && ak != "" && sk != "" {
		if caller, aerr = s.authenticate(r.Context(), r); aerr != nil {
			writeError(w, aerr)
			return
		}
	} else if req.Token == "" {
		req.Token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	existing, err := s.lookupName(r.Context(), "hosts", "-", req.Name)
	if err != nil {
		writeError(w, store.Unavailable(err))
		return
	}
	switch {
	case caller != nil && caller.Role == api.RoleAdmin:
	case caller != nil && caller.Role == api.RoleAgent && existing != "" && caller.HostID == existing:
		// The host's own agent, rotating its key.
	case caller != nil && req.Token == "":
		writeError(w, forbidden(caller, fmt.Sprintf("register host %q (only an admin key, or the agent key of that very host, registers without a token)", req.Name)))
		return
	default:
		if aerr := s.useToken(r.Context(), req.Token, req.Name, existing); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	hostsKind, _ := api.KindByCollection("hosts")
	var stored []byte
	var rev int64
	if existing != "" {
		stored, rev, aerr = s.st.Update(r.Context(), hostsKind, existing, 0, func(cur api.Object) (api.Object, []byte, *api.Error) {
			h := cur.(*api.Host)
			if req.AgentIP != "" {
				h.Status.AgentIP = req.AgentIP
			}
			if req.Hostname != "" {
				h.Status.Hostname = req.Hostname
			}
			return h, nil, nil
		})
	} else {
		// Two agents racing for one new name: the second gets the name's
		// 409, not the first one's host.
		h := &api.Host{Meta: api.Meta{Name: req.Name, Labels: req.Labels}}
		h.Status = api.HostStatus{State: api.HostRegistering, AgentIP: req.AgentIP, Hostname: req.Hostname}
		stored, rev, aerr = s.st.Create(r.Context(), hostsKind, h, nil)
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var host api.Host
	json.Unmarshal(stored, &host)
	host.Revision = rev
	// The host's liveness lease, which its agent renews.
	leasesKind, _ := api.KindByCollection("leases")
	lease := &api.Lease{Meta: api.Meta{Name: api.HostLeaseName(host.ID)}, Spec: api.LeaseSpec{HostID: host.ID, HolderIdentity: host.Name, LeaseDurationSeconds: 40}}
	if _, _, aerr := s.st.Create(r.Context(), leasesKind, lease, nil); aerr != nil && aerr.Code != api.CodeNameTaken {
		writeError(w, aerr)
		return
	}
	// Revoke the host's earlier agent keys, then issue a new one.
	keysKind, _ := api.KindByCollection("apikeys")
	prefix := s.st.IndexPrefix("apikeys", "hosts", host.ID)
	var old []string
	if _, err := s.st.List(r.Context(), prefix, true, func(key string, _ []byte, _ int64) error {
		old = append(old, strings.TrimPrefix(key, prefix))
		return nil
	}); err != nil {
		writeError(w, store.Unavailable(err))
		return
	}
	for _, id := range old {
		_, rev, _, aerr := s.st.Remove(r.Context(), keysKind, id, 0)
		s.auth.Invalidate("apikeys", id, rev)
		if aerr != nil && aerr.Status != http.StatusNotFound {
			writeError(w, aerr)
			return
		}
	}
	key := &api.APIKey{Meta: api.Meta{Name: "agent-" + host.ID}, Spec: api.APIKeySpec{Role: api.RoleAgent, HostID: host.ID, Description: "agent of host " + host.Name}}
	var reveal func(api.Object)
	if _, _, reveal, aerr = s.createWithSecrets(r.Context(), keysKind, key, nil); aerr != nil {
		writeError(w, aerr)
		return
	}
	reveal(key)
	b, _ := json.Marshal(api.RegisterResponse{Host: host, AccessKey: key.ID, SecretKey: key.Status.SecretKey})
	writeRaw(w, http.StatusOK, b)
}

// decodeRegister reads and checks a registration body.
func decodeRegister(body []byte) (api.RegisterRequest, *api.Error) {
	var req api.RegisterRequest
	m, aerr := decodeBody(body)
	if aerr != nil {
		return req, aerr
	}
	if aerr := checkShape(typeOf(&req), m, ""); aerr != nil {
		return req, aerr
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, jsonSyntaxError(body, err)
	}
	if req.Name == "" {
		return req, required("name", "the host's name")
	}
	if len(req.Name) > 63 || !validHostName(req.Name) {
		return req, invalid("name", "%q is not a host name: lowercase letters, digits, '-' and '.', labels of at most 63 characters", req.Name)
	}
	if req.AgentIP != "" {
		if aerr := validIP("agentIP", req.AgentIP); aerr != nil {
			return req, aerr
		}
	}
	for k, v := range req.Labels {
		if aerr := validLabel("labels", k, v); aerr != nil {
			return req, aerr
		}
	}
	return req, nil
}

var errBadToken = api.NewError(http.StatusUnauthorized, api.CodeUnauthorized, "token", "registration token is missing or not valid: create one with POST /v1/registrationtokens (drover token create)")

// useToken checks a registration token against its limits for registering
// name (held by host existing, if any) and counts the use, in one
// transaction with the check, so a token of n uses registers n hosts however
// many agents race for it.
func (s *Server) useToken(ctx context.Context, token, name, existing string) *api.Error {
	id, secret, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || id == "" || secret == "" || strings.Contains(id, "/") {
		return errBadToken
	}
	resp, err := s.st.Cli.Get(ctx, s.st.SecretKey("registrationtokens", id))
	if err != nil {
		return store.Unavailable(err)
	}
	if len(resp.Kvs) == 0 || !auth.SecretMatches(string(resp.Kvs[0].Value), secret) {
		return errBadToken
	}
	kind, _ := api.KindByCollection("registrationtokens")
	check := func(t *api.RegistrationToken, now time.Time) *api.Error {
		if t.Spec.ExpiresAt != nil && !now.Before(*t.Spec.ExpiresAt) {
			return api.NewError(http.StatusUnauthorized, api.CodeUnauthorized, "token", "registration token %s expired at %s", id, t.Spec.ExpiresAt.Format(time.RFC3339))
		}
		if t.Spec.MaxUses > 0 && t.Status.Uses >= t.Spec.MaxUses {
			return api.NewError(http.StatusUnauthorized, api.CodeUnauthorized, "token", "registration token %s is used up (%d of %d registrations)", id, t.Status.Uses, t.Spec.MaxUses)
		}
		if p := t.Spec.HostNamePattern; p != "" {
			if ok, _ := path.Match(p, name); !ok {
				return api.NewError(http.StatusForbidden, api.CodeForbidden, "name", "registration token %s registers only hosts named like %q, not %q", id, p, name)
			}
		}
		if existing != "" && t.Spec.HostNamePattern != name {
			return api.NewError(http.StatusConflict, api.CodeConflict, "name",
				"host %q is already registered (%s): re-registering it needs its agent's key (HTTP Basic), a registration token with spec.hostNamePattern %q, or an admin key", name, existing, name)
		}
		return nil
	}
	raw, rev, err := s.st.Get(ctx, "registrationtokens", id)
	if err == store.ErrNotFound {
		return errBadToken // deleted meanwhile
	} else if err != nil {
		return store.Unavailable(err)
	}
	cur, err := store.DecodeStored(kind, raw, rev)
	if err != nil {
		return store.InternalError(err)
	}
	if t := cur.(*api.RegistrationToken); t.Spec.MaxUses == 0 {
		// Nothing to count against: checked without a write, so a
		// thousand hosts joining at once do not queue on the token.
		return check(t, time.Now().UTC())
	}
	// Uses are counted in the write that checks them.
	_, _, aerr := s.st.Update(ctx, kind, id, 0, func(cur api.Object) (api.Object, []byte, *api.Error) {
		t := cur.(*api.RegistrationToken)
		now := time.Now().UTC()
		if aerr := check(t, now); aerr != nil {
			return nil, nil, aerr
		}
		t.Status.Uses++
		t.Status.LastUsedAt = &now
		return t, nil, nil
	})
	if aerr != nil && aerr.Status == http.StatusNotFound {
		return errBadToken // deleted meanwhile
	}
	return aerr
}

// lookupName returns the id holding a unique name, or "".
func (s *Server) lookupName(ctx context.Context, coll, scope, name string) (string, error) {
	resp, err := s.st.Cli.Get(ctx, s.st.NameKey(coll, scope, name))
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}
