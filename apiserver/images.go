package apiserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/drover/drover/api"
)

// Images without a registry.
//
// No registry is reachable from drover's hosts, so the engine keeps the
// images its stacks need and hands them to agents: an admin or service key
// uploads an image as `docker save` makes it (PUT /v1/images?name=REF), an
// agent that lacks an image downloads it (GET /v1/images?name=REF) and
// loads it into its Docker Engine. Images are files in the server's data
// directory (images/), not in etcd (which takes values of 1.5 MiB at most):
// with several servers, each serves what was uploaded to it, so upload to
// every server (drover image push does it for the server it talks to).

// imageRef checks an image reference: what docker accepts, nothing that
// could walk out of the images directory.
func imageRef(r *http.Request) (string, *api.Error) {
	ref := r.URL.Query().Get("name")
	if ref == "" {
		return "", required("name", "the image reference, e.g. ?name=drover/pause:v1")
	}
	if len(ref) > 255 || strings.Contains(ref, "..") || strings.HasPrefix(ref, "/") {
		return "", invalid("name", "%q is not an image reference", ref)
	}
	for _, c := range ref {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-/:@", c)) {
			return "", invalid("name", "%q is not an image reference", ref)
		}
	}
	return ref, nil
}

// imageFile is where an image reference is kept (references are flattened:
// "/" and ":" become "_", and a hash of the reference keeps them apart).
func (s *Server) imageFile(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	flat := strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(ref)
	return filepath.Join(s.opts.DataDir, "images", flat+"-"+hex.EncodeToString(sum[:4])+".tar")
}

// ImageInfo describes an image the engine holds.
type ImageInfo struct {
	Name   string    `json:"name"`
	Size   int64     `json:"size"`
	SHA256 string    `json:"sha256"`
	Stored time.Time `json:"storedAt"`
}

func (s *Server) imageMeta(path string) (ImageInfo, error) {
	var info ImageInfo
	b, err := os.ReadFile(path + ".json")
	if err != nil {
		return info, err
	}
	return info, json.Unmarshal(b, &info)
}

// putImage stores an uploaded `docker save` archive.
func (s *Server) putImage(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p.Role != api.RoleAdmin && p.Role != api.RoleService {
		writeError(w, forbidden(p, "upload images"))
		return
	}
	ref, aerr := imageRef(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	// An image takes longer to arrive than a request: lift the read
	// deadline for this body (a trickling client still has its limit).
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(30 * time.Minute))
	path := s.imageFile(ref)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "images directory: %v", err))
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".upload-*")
	if err != nil {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "images directory: %v", err))
		return
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "reading the image archive: %v", err))
		return
	}
	if n < 512 {
		writeError(w, invalid("body", "%d bytes is no image archive (send what docker save writes)", n))
		return
	}
	info := ImageInfo{Name: ref, Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), Stored: time.Now().UTC()}
	if err := os.Rename(tmp.Name(), path); err != nil {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "storing the image: %v", err))
		return
	}
	b, _ := json.Marshal(info)
	if err := os.WriteFile(path+".json", b, 0o600); err != nil {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "storing the image: %v", err))
		return
	}
	s.log.Info("image stored", "image", ref, "bytes", n, "sha256", info.SHA256[:12])
	writeRaw(w, http.StatusCreated, b)
}

// getImages serves one image's archive (?name=REF), or the list.
func (s *Server) getImages(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("name") == "" {
		s.listImages(w)
		return
	}
	ref, aerr := imageRef(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	path := s.imageFile(ref)
	info, err := s.imageMeta(path)
	f, ferr := os.Open(path)
	if err != nil || ferr != nil {
		writeError(w, api.NewError(http.StatusNotFound, api.CodeNotFound, "name", "the engine holds no image %q (upload it with drover image push)", ref))
		return
	}
	defer f.Close()
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(30 * time.Minute))
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Length", fmt.Sprint(info.Size))
	w.Header().Set("X-Image-Sha256", info.SHA256)
	io.Copy(w, f)
}

func (s *Server) listImages(w http.ResponseWriter) {
	out := []ImageInfo{}
	entries, err := os.ReadDir(filepath.Join(s.opts.DataDir, "images"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "images directory: %v", err))
		return
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tar.json") {
			if info, err := s.imageMeta(filepath.Join(s.opts.DataDir, "images", strings.TrimSuffix(e.Name(), ".json"))); err == nil {
				out = append(out, info)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	b, _ := json.Marshal(map[string]any{"data": out})
	writeRaw(w, http.StatusOK, b)
}
