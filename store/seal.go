package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Secrets at rest.
//
// The private keys of certificates are stored sealed with AES-256-GCM under
// a key that lives in a file beside the server (never in etcd), with the
// secret's etcd key as additional data, so a sealed value copied to another
// object's key does not open. A sealed value reads
//
//	drover-aesgcm:<key id>:<base64 of nonce and ciphertext>
//
// The key file holds one key per line, "<id> <base64 of 32 bytes>"; the
// first line seals, every line opens. To rotate: put a new line first
// (drover server --rotate-encryption-key does), restart every server with
// the new file; each server re-seals at start what an older key sealed;
// once one has logged "secrets re-sealed", the old line may go.

// sealedCollections are the collections whose secrets are sealed. The
// others' secrets are already one-way hashes (API keys, tokens).
var sealedCollections = map[string]bool{"certificates": true}

const sealPrefix = "drover-aesgcm:"

// Keyring seals and opens secrets.
type Keyring struct {
	path string
	keys []sealKey // keys[0] seals
}

type sealKey struct {
	id   string
	aead cipher.AEAD
}

// LoadKeyring reads the key file at path, creating it with one new key if
// it does not exist.
func LoadKeyring(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		line, err := newKeyLine()
		if err != nil {
			return nil, err
		}
		b = []byte("# drover: keys sealing certificate private keys at rest (AES-256-GCM).\n# The first key seals, all open. Keep this file secret and the same on every server.\n" + line)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("creating the encryption key file %s: %w", path, err)
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("reading the encryption key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the encryption key file %s has mode %v: others may read it; chmod 600 it", path, fi.Mode().Perm())
	}
	k := &Keyring{path: path}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, enc, ok := strings.Cut(line, " ")
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
		if !ok || id == "" || strings.Contains(id, ":") || err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("%s:%d: want \"<id> <base64 of 32 bytes>\"", path, n)
		}
		block, _ := aes.NewCipher(raw)
		aead, _ := cipher.NewGCM(block)
		for _, have := range k.keys {
			if have.id == id {
				return nil, fmt.Errorf("%s:%d: key id %q appears twice", path, n, id)
			}
		}
		k.keys = append(k.keys, sealKey{id, aead})
	}
	if len(k.keys) == 0 {
		return nil, fmt.Errorf("%s holds no key", path)
	}
	return k, nil
}

func newKeyLine() (string, error) {
	raw := make([]byte, 32+3)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	// The id names the day, and three random bytes tell apart keys made
	// the same day.
	return fmt.Sprintf("k-%s-%x %s\n", time.Now().UTC().Format("20060102"), raw[32:], base64.StdEncoding.EncodeToString(raw[:32])), nil
}

// RotateKeyring puts a new key first in the file at path (creating it if
// need be) and returns the new key's id.
func RotateKeyring(path string) (string, error) {
	if _, err := LoadKeyring(path); err != nil {
		return "", err
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, err := newKeyLine()
	if err != nil {
		return "", err
	}
	var head, rest []byte
	// Keep the leading comment, then the new key, then the older ones.
	for len(old) > 0 && old[0] == '#' {
		i := bytes.IndexByte(old, '\n')
		if i < 0 {
			i = len(old) - 1
		}
		head, old = append(head, old[:i+1]...), old[i+1:]
	}
	rest = old
	tmp := path + ".new"
	if err := os.WriteFile(tmp, append(append(head, line...), rest...), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(line, " ")
	return id, nil
}

// CurrentKey is the id of the key that seals.
func (k *Keyring) CurrentKey() string { return k.keys[0].id }

// Seal encrypts plain for the etcd key it will be stored at.
func (k *Keyring) Seal(plain []byte, at string) []byte {
	key := k.keys[0]
	nonce := make([]byte, key.aead.NonceSize(), key.aead.NonceSize()+len(plain)+key.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	ct := key.aead.Seal(nonce, nonce, plain, []byte(at))
	out := make([]byte, 0, len(sealPrefix)+len(key.id)+1+base64.StdEncoding.EncodedLen(len(ct)))
	out = append(out, sealPrefix...)
	out = append(out, key.id...)
	out = append(out, ':')
	return base64.StdEncoding.AppendEncode(out, ct)
}

// Open decrypts a value stored at the etcd key at. A value stored before
// sealing existed (no prefix) is returned as it is, with current false, as
// is one sealed by an older key: both are re-sealed by Reseal.
func (k *Keyring) Open(stored []byte, at string) (plain []byte, current bool, err error) {
	rest, ok := bytes.CutPrefix(stored, []byte(sealPrefix))
	if !ok {
		return stored, false, nil
	}
	id, enc, ok := bytes.Cut(rest, []byte(":"))
	if !ok {
		return nil, false, fmt.Errorf("secret at %s: malformed sealed value", at)
	}
	for i, key := range k.keys {
		if key.id != string(id) {
			continue
		}
		ct, err := base64.StdEncoding.AppendDecode(nil, enc)
		if err != nil || len(ct) < key.aead.NonceSize() {
			return nil, false, fmt.Errorf("secret at %s: malformed sealed value", at)
		}
		plain, err := key.aead.Open(nil, ct[:key.aead.NonceSize()], ct[key.aead.NonceSize():], []byte(at))
		if err != nil {
			return nil, false, fmt.Errorf("secret at %s does not open with key %s: it was altered or moved from another key", at, id)
		}
		return plain, i == 0, nil
	}
	return nil, false, fmt.Errorf("secret at %s is sealed with key %s, which %s does not hold: every server needs the same key file", at, id, k.path)
}

// seal seals a secret about to be stored for coll at etcd key at, if the
// collection's secrets are sealed and the store has a keyring.
func (s *Store) seal(coll string, secret []byte, at string) []byte {
	if secret == nil || s.Keyring == nil || !sealedCollections[coll] {
		return secret
	}
	return s.Keyring.Seal(secret, at)
}

// Secret reads and opens the secret of an object (a certificate's private
// key, say).
func (s *Store) Secret(ctx context.Context, coll, id string) ([]byte, error) {
	at := s.SecretKey(coll, id)
	resp, err := s.Cli.Get(ctx, at)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotFound
	}
	if s.Keyring == nil || !sealedCollections[coll] {
		return resp.Kvs[0].Value, nil
	}
	plain, _, err := s.Keyring.Open(resp.Kvs[0].Value, at)
	return plain, err
}

// checkKeyring makes sure this server's keys open what the others seal,
// before it writes anything sealed: a value sealed by the first server of a
// store is kept at s/keyring-check, and opened by every server that starts.
func (s *Store) checkKeyring(ctx context.Context) error {
	at := s.Prefix + "s/keyring-check"
	resp, err := s.Cli.Get(ctx, at)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		_, err := s.Cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(at), "=", 0)).
			Then(clientv3.OpPut(at, string(s.Keyring.Seal([]byte("drover"), at)))).Commit()
		return err
	}
	_, current, err := s.Keyring.Open(resp.Kvs[0].Value, at)
	if err != nil {
		return fmt.Errorf("this server's encryption keys are not those of the servers that share the store: %w", err)
	}
	if !current {
		_, err = s.Cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(at), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(at, string(s.Keyring.Seal([]byte("drover"), at)))).Commit()
	}
	return err
}

// Reseal seals anew, with the current key, every sealed collection's secret
// stored in plain text or under an older key. It fails, changing nothing
// more, at a secret it cannot open: the key file is then not the one that
// sealed it.
func (s *Store) Reseal(ctx context.Context) (int, error) {
	if s.Keyring == nil {
		return 0, nil
	}
	if err := s.checkKeyring(ctx); err != nil {
		return 0, err
	}
	n := 0
	for coll := range sealedCollections {
		prefix := s.Prefix + "s/" + coll + "/"
		type item struct {
			key string
			val []byte
			rev int64
		}
		var stale []item
		if _, err := s.List(ctx, prefix, false, func(key string, value []byte, rev int64) error {
			_, current, err := s.Keyring.Open(value, key)
			if err != nil {
				return err
			}
			if !current {
				stale = append(stale, item{key, value, rev})
			}
			return nil
		}); err != nil {
			return n, err
		}
		for _, it := range stale {
			plain, _, err := s.Keyring.Open(it.val, it.key)
			if err != nil {
				return n, err
			}
			// Only if unchanged meanwhile; a newer value was sealed by its writer.
			if _, err := s.Cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(it.key), "=", it.rev)).
				Then(clientv3.OpPut(it.key, string(s.Keyring.Seal(plain, it.key)))).Commit(); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
