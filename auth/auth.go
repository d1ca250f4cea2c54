// Package auth is who may do what: API key principals and their rights,
// the cache of verified keys, credentials parsing and secret hashing. It
// knows nothing of the store or of HTTP routing.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"

	"github.com/drover/drover/api"
)

// Secrets are 40 random characters (about 238 bits), so one SHA-256 is a safe
// hash for them: nothing to brute-force, and cheap enough to check on every
// request.
const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// NewSecret returns a fresh secret key.
func NewSecret() string { return RandomString(40, secretAlphabet) }

// RandomString returns n characters drawn from alphabet by crypto/rand.
func RandomString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// HashSecret is what is stored of a secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches compares a secret with a stored hash in constant time.
func SecretMatches(hash, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hash), []byte(HashSecret(secret))) == 1
}

// Principal is who made a request.
type Principal struct {
	AccessKey string
	Role      string
	HostID    string // agent keys only
}

// CanRead says whether the principal may read a collection at all.
func (p *Principal) CanRead(coll string) bool {
	switch p.Role {
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

// CanSee narrows reads of single objects: an agent sees its own host and the
// containers placed on it.
func (p *Principal) CanSee(coll, id, hostID string) bool {
	if p.Role != api.RoleAgent {
		return true
	}
	switch coll {
	case "hosts":
		return id == p.HostID
	case "containers", "leases":
		return hostID == p.HostID
	}
	return true
}

// CanWrite says whether the principal may create/update/delete in coll
// (statusOnly: through the /status subresource). Agents write only what
// they observe: the status of their own host and of the containers placed
// on it (checked by CanSee), and their host's lease. Names, labels,
// scheduling fields and launch configs are not theirs to change.
func (p *Principal) CanWrite(coll, method string, statusOnly bool) bool {
	switch p.Role {
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

// Cache remembers verified keys. Entries are dropped when the event hub sees
// the key change; tombstones stop a read that raced a change from putting a
// stale entry back.
type Cache struct {
	mu      sync.Mutex
	entries map[string]authEntry
	tomb    map[string]int64
	floor   int64 // reads older than this may predate a change the hub never saw
}

type authEntry struct {
	hash string
	p    Principal
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{entries: map[string]authEntry{}, tomb: map[string]int64{}}
}

// Invalidate forgets a key that changed at rev (collection apikeys).
func (c *Cache) Invalidate(coll, id string, rev int64) {
	if coll != "apikeys" {
		return
	}
	c.mu.Lock()
	delete(c.entries, id)
	c.tomb[id] = rev
	if len(c.tomb) > maxTombstones {
		// Tombstones only guard reads older than them: raising the floor
		// to this revision guards every one of them at once, and the map
		// starts again, so key churn cannot grow it without bound.
		c.tomb = map[string]int64{}
		c.entries = map[string]authEntry{}
		c.floor = max(c.floor, rev)
	}
	c.mu.Unlock()
}

// maxTombstones bounds the cache's memory of changed keys.
const maxTombstones = 10000

// Reset forgets every key: the hub skipped events (compaction under it), so
// a revocation may have gone unseen. Only reads at or after rev are cached.
func (c *Cache) Reset(rev int64) {
	c.mu.Lock()
	c.entries = map[string]authEntry{}
	c.floor = rev
	c.mu.Unlock()
}

// Lookup returns the principal of an access key and its secret's hash,
// from the cache or, on a miss, from load (which answers at store revision
// rev; found false: no such key).
func (c *Cache) Lookup(ak string, load func() (p Principal, hash string, rev int64, found bool, err error)) (Principal, string, bool, error) {
	c.mu.Lock()
	e, hit := c.entries[ak]
	c.mu.Unlock()
	if hit {
		return e.p, e.hash, true, nil
	}
	p, hash, rev, found, err := load()
	if err != nil || !found {
		return Principal{}, "", false, err
	}
	c.mu.Lock()
	if c.tomb[ak] < rev && rev >= c.floor {
		c.entries[ak] = authEntry{hash: hash, p: p}
	}
	c.mu.Unlock()
	return p, hash, true, nil
}

// Credentials reads the access and secret key of a request: HTTP Basic, or
// "Authorization: Bearer ak:sk" (or that, base64-encoded).
func Credentials(r *http.Request) (string, string, bool) {
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

// OwnHost is the host an agent key is limited to ("" for other roles).
func (p *Principal) OwnHost() string {
	if p.Role == api.RoleAgent {
		return p.HostID
	}
	return ""
}
