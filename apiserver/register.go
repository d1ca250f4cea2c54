package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
	"github.com/drover/drover/store"
)

// register serves POST /v1/hosts/register: an agent presents a registration
// token (in the body or as "Authorization: Bearer TOKEN") with its name,
// address and labels, and gets its host and an agent key scoped to that
// host. Registering the same name again returns the same host with a fresh
// key (the old one is revoked), so an agent that lost its key can recover.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	m, aerr := decodeBody(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req api.RegisterRequest
	if aerr := checkShape(typeOf(&req), m, ""); aerr != nil {
		writeError(w, aerr)
		return
	}
	json.Unmarshal(body, &req)
	if req.Token == "" {
		req.Token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	if !s.tokenValid(r.Context(), req.Token) {
		writeError(w, api.NewError(http.StatusUnauthorized, api.CodeUnauthorized, "token", "registration token is missing or not valid: create one with POST /v1/registrationtokens"))
		return
	}
	hostsKind, _ := api.KindByCollection("hosts")
	var host api.Host
	for attempt := 0; ; attempt++ {
		id, err := s.lookupName(r.Context(), "hosts", "-", req.Name)
		if err != nil {
			writeError(w, store.Unavailable(err))
			return
		}
		var stored []byte
		var rev int64
		if id != "" {
			stored, rev, aerr = s.st.Update(r.Context(), hostsKind, id, 0, func(cur api.Object) (api.Object, []byte, *api.Error) {
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
			h := &api.Host{Meta: api.Meta{Name: req.Name, Labels: req.Labels}}
			h.Status = api.HostStatus{State: api.HostRegistering, AgentIP: req.AgentIP, Hostname: req.Hostname}
			stored, rev, aerr = s.st.Create(r.Context(), hostsKind, h, nil)
			if aerr != nil && aerr.Code == api.CodeNameTaken && attempt == 0 {
				continue // registered concurrently: take that one
			}
		}
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		json.Unmarshal(stored, &host)
		host.Revision = rev
		break
	}
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
	if _, _, reveal, aerr = s.createWithSecrets(r.Context(), keysKind, key); aerr != nil {
		writeError(w, aerr)
		return
	}
	reveal(key)
	b, _ := json.Marshal(api.RegisterResponse{Host: host, AccessKey: key.ID, SecretKey: key.Status.SecretKey})
	writeRaw(w, http.StatusOK, b)
}

func (s *Server) tokenValid(ctx context.Context, token string) bool {
	id, secret, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || id == "" || secret == "" || strings.Contains(id, "/") {
		return false
	}
	resp, err := s.st.Cli.Get(ctx, s.st.SecretKey("registrationtokens", id))
	if err != nil || len(resp.Kvs) == 0 {
		return false
	}
	return auth.SecretMatches(string(resp.Kvs[0].Value), secret)
}

// lookupName returns the id holding a unique name, or "".
func (s *Server) lookupName(ctx context.Context, coll, scope, name string) (string, error) {
	resp, err := s.st.Cli.Get(ctx, s.st.NameKey(coll, scope, name))
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}
