package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
)

// Secrets are 40 random characters (about 238 bits), so one SHA-256 is a safe
// hash for them: nothing to brute-force, and cheap enough to check on every
// request.
const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func newSecret() string { return randomString(40, secretAlphabet) }

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func secretMatches(hash, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hash), []byte(hashSecret(secret))) == 1
}

// principal is who made a request.
type principal struct {
	accessKey string
	role      string
	hostID    string // agent keys only
}

// canRead says whether the principal may read a collection at all.
func (p *principal) canRead(coll string) bool {
	switch p.role {
	case api.RoleAdmin:
		return true
	case api.RoleService:
		return coll != "apikeys" && coll != "registrationtokens"
	case api.RoleAgent:
		switch coll {
		case "hosts", "containers", "services", "stacks", "networks", "certificates", "leases":
			return true
		}
	}
	return false
}

// canSee narrows reads of single objects: an agent sees its own host and the
// containers placed on it.
func (p *principal) canSee(coll, id, hostID string) bool {
	if p.role != api.RoleAgent {
		return true
	}
	switch coll {
	case "hosts":
		return id == p.hostID
	case "containers", "leases":
		return hostID == p.hostID
	}
	return true
}

// canWrite says whether the principal may create/update/delete in coll
// (statusOnly: through the /status subresource). Agents write only what
// they observe: the status of their own host and of the containers placed
// on it (checked by canSee), and their host's lease. Names, labels,
// scheduling fields and launch configs are not theirs to change.
func (p *principal) canWrite(coll, method string, statusOnly bool) bool {
	switch p.role {
	case api.RoleAdmin:
		return true
	case api.RoleService:
		return coll != "apikeys" && coll != "registrationtokens"
	case api.RoleAgent:
		update := method == http.MethodPut || method == http.MethodPatch
		if coll == "leases" {
			return update && !statusOnly
		}
		return (coll == "hosts" || coll == "containers") && update && statusOnly
	}
	return false
}

// authCache remembers verified keys. Entries are dropped when the hub sees
// the key change; tombstones stop a read that raced a change from putting a
// stale entry back.
type authCache struct {
	mu      sync.Mutex
	entries map[string]authEntry
	tomb    map[string]int64
	floor   int64 // reads older than this may predate a change the hub never saw
}

type authEntry struct {
	hash string
	p    principal
}

func newAuthCache() *authCache {
	return &authCache{entries: map[string]authEntry{}, tomb: map[string]int64{}}
}

func (c *authCache) invalidate(ev *event) {
	if ev.collection != "apikeys" {
		return
	}
	c.mu.Lock()
	delete(c.entries, ev.id)
	c.tomb[ev.id] = ev.rev
	c.mu.Unlock()
}

// reset forgets every key: the hub skipped events (compaction under it), so
// a revocation may have gone unseen. Only reads at or after rev are cached.
func (c *authCache) reset(rev int64) {
	c.mu.Lock()
	c.entries = map[string]authEntry{}
	c.floor = rev
	c.mu.Unlock()
}

func credentialsFrom(r *http.Request) (string, string, bool) {
	if ak, sk, ok := r.BasicAuth(); ok {
		return ak, sk, true
	}
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		tok = strings.TrimSpace(tok)
		if ak, sk, ok := strings.Cut(tok, ":"); ok {
			return ak, sk, true
		}
		// a base64 "ak:sk" is accepted too, as some clients send it
		if b, err := base64.StdEncoding.DecodeString(tok); err == nil {
			if ak, sk, ok := strings.Cut(string(b), ":"); ok {
				return ak, sk, true
			}
		}
	}
	return "", "", false
}

var errUnauthorized = api.NewError(http.StatusUnauthorized, api.CodeUnauthorized, "", "missing or invalid API key: send HTTP Basic accessKey:secretKey or \"Authorization: Bearer accessKey:secretKey\"")

// authenticate finds the principal of a request.
func (s *Server) authenticate(ctx context.Context, r *http.Request) (*principal, *api.Error) {
	ak, sk, ok := credentialsFrom(r)
	if !ok || ak == "" || sk == "" {
		return nil, errUnauthorized
	}
	c := s.auth
	c.mu.Lock()
	e, hit := c.entries[ak]
	c.mu.Unlock()
	if !hit {
		resp, err := s.st.cli.Txn(ctx).Then(
			clientv3.OpGet(s.st.objectKey("apikeys", ak)),
			clientv3.OpGet(s.st.secretKey("apikeys", ak)),
		).Commit()
		if err != nil {
			return nil, storeError(err)
		}
		objKvs := resp.Responses[0].GetResponseRange().Kvs
		secKvs := resp.Responses[1].GetResponseRange().Kvs
		if len(objKvs) == 0 || len(secKvs) == 0 {
			return nil, errUnauthorized
		}
		var key api.APIKey
		if err := json.Unmarshal(objKvs[0].Value, &key); err != nil {
			return nil, internalError(err)
		}
		e = authEntry{hash: string(secKvs[0].Value), p: principal{accessKey: ak, role: key.Spec.Role, hostID: key.Spec.HostID}}
		c.mu.Lock()
		if c.tomb[ak] < resp.Header.Revision && resp.Header.Revision >= c.floor {
			c.entries[ak] = e
		}
		c.mu.Unlock()
	}
	if !secretMatches(e.hash, sk) {
		return nil, errUnauthorized
	}
	p := e.p
	return &p, nil
}

func forbidden(p *principal, what string) *api.Error {
	return api.NewError(http.StatusForbidden, api.CodeForbidden, "", "key %s (role %s) may not %s", p.accessKey, p.role, what)
}
