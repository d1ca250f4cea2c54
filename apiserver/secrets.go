package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
	"github.com/drover/drover/pki"
	"github.com/drover/drover/store"
)

// ContainerKeyID is the id of the engine key a container asked for with the
// label api.LabelAgentRole; it goes when the container goes.
func ContainerKeyID(containerID string) string { return "key-" + containerID }

// containerSecrets serves GET /v1/containers/{id}/secrets: what a system
// container asked for in its labels, to the agent of the host it is placed
// on (or an admin), as Rancher 1.x gave a container with
// io.rancher.container.create_agent its own environment key.
//
//   - api.LabelAgentRole=service: an engine key of role service, made now
//     (a key made before is replaced: only its hash was kept).
//   - api.LabelCertificates=NAME,...: those engine certificates with their
//     private keys; "{host}" in a name is the container's host's name. A
//     host's kubelet certificates (k8s-kubelet-client-<host>,
//     k8s-kubelet-serving-<host>) are issued by the cluster CA the first time
//     they are asked for, so a joining host needs nobody to run drover cert.
//
// With ?only=certificates only the certificates are served (no new key).
//
// Placing a container on a host trusts that host with the container's
// secrets, as Kubernetes trusts a node with its pods' secrets.
func (s *Server) containerSecrets(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	id := r.PathValue("id")
	raw, _, err := s.st.Get(r.Context(), "containers", id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, api.NewError(http.StatusNotFound, api.CodeNotFound, "", "container %q not found", id))
		return
	} else if err != nil {
		writeError(w, store.Unavailable(err))
		return
	}
	var c api.Container
	if err := json.Unmarshal(raw, &c); err != nil {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "container %q: %v", id, err))
		return
	}
	switch {
	case p.Role == api.RoleAdmin:
	case p.Role == api.RoleAgent && p.HostID != "" && p.HostID == c.Spec.HostID:
	default:
		writeError(w, forbidden(p, "read the secrets of container "+id+" (only the agent of its host may)"))
		return
	}
	labels := c.AllLabels()
	if labels[api.LabelAgentRole] == "" && s.isLoadBalancer(r, &c) {
		// drover lb reads the engine: every LB container has its own key.
		labels[api.LabelAgentRole] = api.RoleService
	}
	var out api.ContainerSecrets
	// ?only=certificates: the agent refreshing certificates after a
	// rotation; the container's engine key stays as it is.
	certsOnly := r.URL.Query().Get("only") == "certificates"
	if role := api.ContainerAgentRole(labels); role != "" && !certsOnly {
		creds, aerr := s.containerKey(r, &c, role)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		out.Credentials = creds
	}
	if names := labels[api.LabelCertificates]; names != "" {
		var host *api.Host
		for _, n := range strings.Split(names, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			if strings.Contains(n, "{host}") {
				if host == nil {
					h, aerr := s.hostOf(r, c.Spec.HostID)
					if aerr != nil {
						writeError(w, aerr)
						return
					}
					host = h
				}
				n = strings.ReplaceAll(n, "{host}", host.Name)
			}
			sc, aerr := s.secretCertificate(r, n, host)
			if aerr != nil {
				writeError(w, aerr)
				return
			}
			out.Certificates = append(out.Certificates, sc)
		}
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Cache-Control", "no-store")
	writeRaw(w, http.StatusOK, b)
}

// isLoadBalancer says whether the container is one of an LB service's.
func (s *Server) isLoadBalancer(r *http.Request, c *api.Container) bool {
	if c.Spec.ServiceID == "" {
		return false
	}
	raw, _, err := s.st.Get(r.Context(), "services", c.Spec.ServiceID)
	if err != nil {
		return false
	}
	var svc api.Service
	return json.Unmarshal(raw, &svc) == nil && svc.Spec.Kind == api.ServiceLoadBalancer
}

func (s *Server) hostOf(r *http.Request, id string) (*api.Host, *api.Error) {
	raw, _, err := s.st.Get(r.Context(), "hosts", id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, api.NewError(http.StatusConflict, api.CodeConflict, "", "the container's host %q is gone", id)
		}
		return nil, store.Unavailable(err)
	}
	var h api.Host
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "host %q: %v", id, err)
	}
	return &h, nil
}

// containerKey makes the container's engine key anew.
func (s *Server) containerKey(r *http.Request, c *api.Container, role string) (*api.Credentials, *api.Error) {
	if role != api.RoleService {
		return nil, api.NewError(http.StatusUnprocessableEntity, api.CodeInvalidField, "labels."+api.LabelAgentRole, "role %q cannot be given to a container: only %q", role, api.RoleService)
	}
	kind, _ := api.KindByCollection("apikeys")
	kid := ContainerKeyID(c.ID)
	if _, rev, _, aerr := s.st.Remove(r.Context(), kind, kid, 0); aerr != nil && aerr.Status != http.StatusNotFound {
		return nil, aerr
	} else if aerr == nil {
		s.auth.Invalidate("apikeys", kid, rev)
	}
	secret := auth.NewSecret()
	key := &api.APIKey{Meta: api.Meta{ID: kid, Name: "container-" + c.ID}, Spec: api.APIKeySpec{Role: role, Description: "key of container " + c.Name + " (" + c.ID + "), removed with it"}}
	key.Status.AccessKey = kid
	if _, _, aerr := s.st.Create(r.Context(), kind, key, []byte(auth.HashSecret(secret))); aerr != nil {
		return nil, aerr
	}
	return &api.Credentials{URL: s.url, AccessKey: kid, SecretKey: secret}, nil
}

// secretCertificate reads a certificate with its key by name, issuing a
// host's kubelet certificates when they are missing.
func (s *Server) secretCertificate(r *http.Request, name string, host *api.Host) (api.SecretCertificate, *api.Error) {
	cert, err := s.certificateByName(r, name)
	if err == nil {
		key, kerr := s.st.Secret(r.Context(), "certificates", cert.ID)
		if kerr != nil && !errors.Is(kerr, store.ErrNotFound) {
			return api.SecretCertificate{}, store.Unavailable(kerr)
		}
		return api.SecretCertificate{Name: name, Cert: cert.Spec.Cert, Key: string(key)}, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return api.SecretCertificate{}, store.Unavailable(err)
	}
	notFound := api.NewError(http.StatusNotFound, api.CodeNotFound, "labels."+api.LabelCertificates, "the engine has no certificate %q (make the Kubernetes PKI with drover cert init, or drover up)", name)
	if host == nil || (name != "k8s-kubelet-client-"+host.Name && name != "k8s-kubelet-serving-"+host.Name) {
		return api.SecretCertificate{}, notFound
	}
	ca, err := s.certificateByName(r, "k8s-ca")
	if err != nil {
		return api.SecretCertificate{}, notFound
	}
	caKey, err := s.st.Secret(r.Context(), "certificates", ca.ID)
	if err != nil {
		return api.SecretCertificate{}, store.Unavailable(err)
	}
	ph := pki.Host{Name: host.Name}
	if ip := net.ParseIP(host.Status.AgentIP); ip != nil {
		ph.IPs = []net.IP{ip}
	}
	cl, sv, err := pki.HostCerts(pki.Pair{Cert: []byte(ca.Spec.Cert), Key: caKey}, ph, pki.Options{})
	if err != nil {
		return api.SecretCertificate{}, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "issuing %s: %v", name, err)
	}
	kind, _ := api.KindByCollection("certificates")
	var want api.SecretCertificate
	for short, pair := range map[string]pki.Pair{"kubelet-client-" + host.Name: cl, "kubelet-serving-" + host.Name: sv} {
		c := &api.Certificate{Meta: api.Meta{Name: "k8s-" + short, Labels: map[string]string{"io.drover.pki": "kubernetes"}}, Spec: api.CertificateSpec{Cert: string(pair.Cert), Key: string(pair.Key)}}
		_, _, _, aerr := s.createWithSecrets(r.Context(), kind, c, nil)
		if aerr != nil && aerr.Code != api.CodeNameTaken {
			return api.SecretCertificate{}, aerr
		}
		if "k8s-"+short == name {
			if aerr != nil {
				// Another request issued it first: serve that one.
				return s.secretCertificate(r, name, nil)
			}
			want = api.SecretCertificate{Name: name, Cert: string(pair.Cert), Key: string(pair.Key)}
		}
	}
	s.log.Info("issued a host's kubelet certificates", "host", host.Name)
	return want, nil
}

func (s *Server) certificateByName(r *http.Request, name string) (*api.Certificate, error) {
	id, err := s.st.IDByName(r.Context(), "certificates", "-", name)
	if err != nil {
		return nil, err
	}
	raw, _, err := s.st.Get(r.Context(), "certificates", id)
	if err != nil {
		return nil, err
	}
	var c api.Certificate
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	return &c, nil
}
