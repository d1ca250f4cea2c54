package apiserver_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

// Failures that explain themselves: a 403 names the verb that was
// refused; /v1/subscribe without a WebSocket upgrade answers the JSON
// error every other path answers.
func TestIntegrationErrorsSayWhat(t *testing.T) {
	integration(t)
	s, admin := testenv.StartServer(t, apiserver.Options{})
	k, err := admin.APIKeys().Create(context.Background(), &api.APIKey{Meta: api.Meta{Name: "svc"}, Spec: api.APIKeySpec{Role: api.RoleService}})
	if err != nil {
		t.Fatal(err)
	}
	svc := &api.Credentials{AccessKey: k.Status.AccessKey, SecretKey: k.Status.SecretKey}
	code, body := raw(t, s.URL(), "POST", "/v1/apikeys", `{"name":"x","spec":{"role":"admin"}}`, svc)
	if code != 403 || !strings.Contains(string(body), "may not create apikeys") {
		t.Errorf("POST /v1/apikeys with a service key: %d %s", code, body)
	}
	code, body = raw(t, s.URL(), "GET", "/v1/subscribe", "", readCreds(t, s))
	var e api.Error
	if code != 400 || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Message, "WebSocket") {
		t.Errorf("GET /v1/subscribe without an upgrade: %d %s", code, body)
	}
}
