package apiserver

import (
	"encoding/json"
	"io"
	"net/http"

	authnv1 "k8s.io/api/authentication/v1"

	"github.com/drover/drover/api"
)

// tokenReview serves POST /v1/tokenreviews: the Kubernetes authentication
// webhook (TokenReview, authentication.k8s.io/v1 or v1beta1, same shape),
// so a kube-apiserver started with --authentication-token-webhook-config-file
// pointing here accepts an engine key "accessKey:secretKey" as a bearer
// token:
//
//   - an admin key is user "drover:<accessKey>" in system:masters;
//   - a service key is user "drover:<accessKey>" in drover:service;
//   - a host's agent key is system:node:<host> in system:nodes.
//
// A revoked or unknown key is "not authenticated" at once (kube-apiserver
// may cache answers for its --authentication-token-webhook-cache-ttl). The
// caller (kube-apiserver) presents an admin or service key of its own.
func (s *Server) tokenReview(w http.ResponseWriter, r *http.Request) {
	if p := principalFrom(r.Context()); p.Role != api.RoleAdmin && p.Role != api.RoleService {
		writeError(w, forbidden(p, "review tokens (admin and service keys may)"))
		return
	}
	var tr authnv1.TokenReview
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&tr); err != nil {
		writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "a TokenReview: %v", err))
		return
	}
	switch tr.APIVersion {
	case "authentication.k8s.io/v1", "authentication.k8s.io/v1beta1":
	default:
		writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "apiVersion", "%q: want authentication.k8s.io/v1 (or v1beta1)", tr.APIVersion))
		return
	}
	out := authnv1.TokenReview{TypeMeta: tr.TypeMeta}
	out.Kind = "TokenReview"
	if user, err := s.reviewToken(r, tr.Spec.Token); err != "" {
		out.Status.Error = err
	} else {
		out.Status.Authenticated, out.Status.User = true, user
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Cache-Control", "no-store")
	writeRaw(w, http.StatusOK, b)
}

// reviewToken checks an engine key given as a bearer token and names its
// Kubernetes user; the second result says why it is not one.
func (s *Server) reviewToken(r *http.Request, token string) (authnv1.UserInfo, string) {
	probe, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "/", nil)
	probe.Header.Set("Authorization", "Bearer "+token)
	p, aerr := s.authenticate(r.Context(), probe)
	if aerr != nil {
		if aerr.Status == http.StatusUnauthorized {
			return authnv1.UserInfo{}, "not a valid drover engine key"
		}
		return authnv1.UserInfo{}, aerr.Message
	}
	switch p.Role {
	case api.RoleAdmin:
		return authnv1.UserInfo{Username: "drover:" + p.AccessKey, UID: p.AccessKey, Groups: []string{"system:masters", "system:authenticated"}}, ""
	case api.RoleService:
		return authnv1.UserInfo{Username: "drover:" + p.AccessKey, UID: p.AccessKey, Groups: []string{"drover:service", "system:authenticated"}}, ""
	case api.RoleAgent:
		h, herr := s.hostOf(r, p.HostID)
		if herr != nil {
			return authnv1.UserInfo{}, "the key's host: " + herr.Message
		}
		return authnv1.UserInfo{Username: "system:node:" + h.Name, UID: p.AccessKey, Groups: []string{"system:nodes", "system:authenticated"}}, ""
	}
	return authnv1.UserInfo{}, "role " + p.Role + " has no Kubernetes user"
}
