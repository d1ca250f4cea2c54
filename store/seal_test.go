package store

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyringSealOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	k, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("new key file has mode %v, want 0600", fi.Mode().Perm())
	}
	secret := []byte("-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n")
	sealed := k.Seal(secret, "/drover/s/certificates/cert-1")
	if bytes.Contains(sealed, []byte("PRIVATE KEY")) || !bytes.HasPrefix(sealed, []byte(sealPrefix+k.CurrentKey()+":")) {
		t.Fatalf("sealed value %q shows the secret or lacks its header", sealed)
	}
	if bytes.Equal(sealed, k.Seal(secret, "/drover/s/certificates/cert-1")) {
		t.Fatal("two seals of one secret are equal: the nonce is not fresh")
	}
	plain, current, err := k.Open(sealed, "/drover/s/certificates/cert-1")
	if err != nil || !current || !bytes.Equal(plain, secret) {
		t.Fatalf("Open = %q, %v, %v", plain, current, err)
	}
	// Bound to its etcd key: copied to another object's key, it does not open.
	if _, _, err := k.Open(sealed, "/drover/s/certificates/cert-2"); err == nil {
		t.Fatal("a sealed value moved to another key opened")
	}
	// Altered, it does not open.
	bad := bytes.Clone(sealed)
	bad[len(bad)-3] ^= 1
	if _, _, err := k.Open(bad, "/drover/s/certificates/cert-1"); err == nil {
		t.Fatal("an altered sealed value opened")
	}
	// Stored before sealing: returned as is, to be re-sealed.
	if plain, current, err := k.Open(secret, "x"); err != nil || current || !bytes.Equal(plain, secret) {
		t.Fatalf("plain legacy value: %q %v %v", plain, current, err)
	}

	// Rotation: a new key seals, the old one still opens.
	id, err := RotateKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadKeyring(path)
	if err != nil || k2.CurrentKey() != id || len(k2.keys) != 2 {
		t.Fatalf("after rotation: %v, current %s, want %s of 2 keys", err, k2.CurrentKey(), id)
	}
	plain, current, err = k2.Open(sealed, "/drover/s/certificates/cert-1")
	if err != nil || current || !bytes.Equal(plain, secret) {
		t.Fatalf("old value after rotation: %q, current %v, %v", plain, current, err)
	}
	// A key file without the sealing key says which key is missing.
	other, _ := LoadKeyring(filepath.Join(t.TempDir(), "other"))
	if _, _, err := other.Open(sealed, "/drover/s/certificates/cert-1"); err == nil || !strings.Contains(err.Error(), k.CurrentKey()) {
		t.Fatalf("opening with another key file: %v, want an error naming key %s", err, k.CurrentKey())
	}
}

func TestKeyringFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"short":   "k1 AAAA\n",
		"noid":    " " + strings.Repeat("A", 44) + "\n",
		"twice":   "k1 " + "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=" + "\nk1 " + "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=" + "\n",
		"empty":   "# nothing\n",
		"garbage": "not a key line\n",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadKeyring(p); err == nil {
			t.Errorf("key file %s (%q) accepted", name, body)
		}
	}
	p := filepath.Join(dir, "open")
	os.WriteFile(p, []byte("k1 MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n"), 0o644)
	if _, err := LoadKeyring(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a key file others may read: %v, want a refusal saying chmod 600", err)
	}
}

func FuzzKeyringOpen(f *testing.F) {
	k, err := LoadKeyring(filepath.Join(f.TempDir(), "keys"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(k.Seal([]byte("secret"), "at"))
	f.Add([]byte(sealPrefix + k.CurrentKey() + ":"))
	f.Add([]byte(sealPrefix + "x:AAAA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, _, err := k.Open(b, "at")
		if err == nil && bytes.HasPrefix(b, []byte(sealPrefix)) && plain == nil {
			t.Fatalf("Open(%q) gave no error and no value", b)
		}
	})
}
