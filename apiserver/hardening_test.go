package apiserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// With its etcd gone, the server answers every plain request within seconds
// with 503, Retry-After and a JSON error, instead of letting requests pile up.
func TestIntegrationStoreAwayAnswers503(t *testing.T) {
	integration(t)
	ctx := context.Background()
	cluster := testenv.StartEtcdCluster(t, 1)
	s, c := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints(), StoreTimeout: 2 * time.Second})
	st := mustStack(t, c, "before")
	cluster.Stop(0)
	creds := readCreds(t, s)
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/v1/stacks/" + st.ID, ""},
		{"POST", "/v1/stacks", `{"name":"during"}`},
		{"PATCH", "/v1/stacks/" + st.ID, `{"labels":{"a":"b"}}`},
		{"GET", "/v1/stacks", ""},
	} {
		start := time.Now()
		code, body := raw(t, s.URL(), req.method, req.path, req.body, creds)
		took := time.Since(start)
		// The bound is generous (the machine is shared): without a deadline
		// these requests hang for a minute or more.
		// A read, or a PATCH whose read failed, did not happen; a create's
		// fate is unknown to the server (etcd may have taken it before
		// going), and the answer says which.
		want := `"code":"ServiceUnavailable"`
		if req.method == "POST" {
			want = `"code":"Unknown"`
		}
		if code != http.StatusServiceUnavailable || took > 20*time.Second || !strings.Contains(string(body), want) {
			t.Fatalf("%s %s with the store away: %d after %s: %s; want 503 with %s within seconds", req.method, req.path, code, took, body, want)
		}
		// Clean text: what happened, not gRPC's or etcd's words.
		for _, raw := range []string{"rpc error", "etcdserver", "desc =", "context deadline"} {
			if strings.Contains(string(body), raw) {
				t.Fatalf("%s %s with the store away answered %s: raw store text %q reaches the client", req.method, req.path, body, raw)
			}
		}
	}
	hreq, _ := http.NewRequest("GET", s.URL()+"/v1/stacks/"+st.ID, nil)
	hreq.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	cluster.Start(0)
	testenv.Eventually(t, "the server answers again once etcd is back", 60*time.Second, func() error {
		_, err := c.Stacks().Get(ctx, st.ID)
		return err
	})
}

// A watch from a revision the store has not reached is refused, with the
// current revision named, instead of waiting on nothing.
func TestIntegrationWatchFromTheFutureRefused(t *testing.T) {
	integration(t)
	s, c := testenv.StartServer(t, apiserver.Options{})
	st := mustStack(t, c, "now")
	creds := readCreds(t, s)
	code, body := raw(t, s.URL(), "GET", fmt.Sprintf("/v1/stacks?watch=true&since=%d", st.Revision+1000), "", creds)
	if code != http.StatusBadRequest || !strings.Contains(string(body), "in the future") {
		t.Fatalf("watch since the future: %d %s; want 400 naming the current revision", code, body)
	}
}

// A write that does not change the spec keeps the rollback point, even when
// it leaves out a default the server fills in.
func TestIntegrationNoOpWriteKeepsRollbackPoint(t *testing.T) {
	integration(t)
	ctx := context.Background()
	_, c := testenv.StartServer(t, apiserver.Options{})
	st, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "rb"}, Spec: api.StackSpec{Compose: "services: {a: {image: x}}\n"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err = c.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"compose": "services: {a: {image: y}}\n"}})
	if err != nil || st.Status.PreviousSpec == nil {
		t.Fatalf("spec change: %+v %v; want a rollback point", st.Status, err)
	}
	prev := *st.Status.PreviousSpec
	if st, err = c.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"compose": "services: {a: {image: y}}\n"}}); err != nil {
		t.Fatal(err)
	}
	again := *st
	again.Spec.Kind = "" // the server's default, left out
	if st, err = c.Stacks().Update(ctx, st.ID, &again); err != nil {
		t.Fatal(err)
	}
	if st.Status.PreviousSpec == nil || !api.SameJSON(*st.Status.PreviousSpec, prev) {
		t.Fatalf("no-op writes moved the rollback point to %+v, want %+v", st.Status.PreviousSpec, prev)
	}
}

// An object too big for etcd is refused with 413 naming its biggest part,
// before the write, instead of a 503 the client would retry forever; the
// previous spec kept for rollback counts.
func TestIntegrationTooBigObjectRefused(t *testing.T) {
	integration(t)
	ctx := context.Background()
	_, c := testenv.StartServer(t, apiserver.Options{})
	big := func(c byte) string { return strings.Repeat(string(c), 900<<10) }
	st, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "big"}, Spec: api.StackSpec{Answers: map[string]string{"a": big('x')}}})
	if err != nil {
		t.Fatalf("a 900 KiB stack fits: %v", err)
	}
	_, err = c.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"answers": map[string]any{"a": big('y')}}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge || ae.Field == "" || !strings.Contains(ae.Message, "status.previousSpec") {
		t.Fatalf("spec + previous spec over the limit: %v; want 413 naming the parts", err)
	}
	got, err := c.Stacks().Get(ctx, st.ID)
	if err != nil || got.Spec.Answers["a"][0] != 'x' || got.Revision != st.Revision {
		t.Fatalf("the refused write changed the stack: %v", err)
	}
}

// Made-up HTTP methods do not grow the metrics without bound.
func TestIntegrationMetricLabelsBounded(t *testing.T) {
	integration(t)
	s, _ := testenv.StartServer(t, apiserver.Options{})
	creds := readCreds(t, s)
	for i := 0; i < 50; i++ {
		raw(t, s.URL(), fmt.Sprintf("MADEUP%d", i), fmt.Sprintf("/nowhere/%d", i), "", creds)
	}
	_, body := raw(t, s.URL(), "GET", "/metrics", "", creds)
	if strings.Contains(string(body), "MADEUP") || strings.Contains(string(body), "/nowhere/") {
		t.Fatal("made-up methods or paths became metric labels")
	}
	if !strings.Contains(string(body), `method="other"`) {
		t.Fatal(`want made-up methods counted as method="other"`)
	}
}

// Input that used to be stored or silently dropped is refused, naming the
// field.
func TestIntegrationBadInputRefused(t *testing.T) {
	integration(t)
	s, _ := testenv.StartServer(t, apiserver.Options{})
	creds := readCreds(t, s)
	bomb := "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		bomb += n + ": &" + n + " [*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + "]\n"
		prev = n
	}
	for _, tc := range []struct{ path, body, field string }{
		{"/v1/hosts", `{"name":"` + strings.Repeat("a", 70) + `.example"}`, "name"},
		{"/v1/stacks", `{"name":"zw","labels":{"zone\u200b":"a"}}`, "labels.zone\u200b"},
		{"/v1/stacks", `{"name":"zv","labels":{"zone":"a\u200bb"}}`, "labels.zone"},
		{"/v1/stacks", `{"name":"when","createdAt":"yesterday"}`, "createdAt"},
		{"/v1/stacks", `{"name":"bomb","spec":{"kind":"kubernetes","templates":{"x.yaml":` + strconv.Quote(bomb) + `}}}`, "spec.templates.x.yaml"},
		{"/v1/stacks", `{"name":"nokind","spec":{"kind":"kubernetes","templates":{"x.yaml":"apiVersion: v1\nmetadata: {name: a}\n"}}}`, "spec.templates.x.yaml"},
	} {
		code, body := raw(t, s.URL(), "POST", tc.path, tc.body, creds)
		var e api.Error
		json.Unmarshal(body, &e)
		if code < 400 || code > 499 || e.Field != tc.field {
			t.Errorf("POST %s %.60s: %d %s; want 4xx naming %q", tc.path, tc.body, code, body, tc.field)
		}
	}
	// Rancher's label keys still pass.
	if code, body := raw(t, s.URL(), "POST", "/v1/stacks", `{"name":"rancher","labels":{"io.rancher.scheduler.affinity:host_label":"zone=a","example.com/tier":"web"}}`, creds); code != 201 {
		t.Fatalf("Rancher label keys: %d %s", code, body)
	}
}

// A client trickling a request body cannot hold its connection past the
// read timeout, key or no key, while streams live on.
func TestIntegrationSlowBodyCutOff(t *testing.T) {
	integration(t)
	s, cl := testenv.StartServer(t, apiserver.Options{ReadTimeout: time.Second})
	creds := readCreds(t, s)
	// A watch outlives the read timeout.
	req, _ := http.NewRequest("GET", s.URL()+"/v1/stacks?watch=true", nil)
	req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	host := strings.TrimPrefix(s.URL(), "http://")
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /v1/stacks HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", host)
	}
	time.Sleep(3 * time.Second)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		// The server answers or closes; either way the connection is done.
		if err == nil && n == 0 {
			t.Fatalf("connection %d still held", i)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d still held after the read timeout", i)
		}
		c.Close()
	}
	// The watch is still there: it gets the next event.
	time.Sleep(time.Second) // past the read timeout for the watch too
	if _, err := cl.Stacks().Create(context.Background(), &api.Stack{Meta: api.Meta{Name: "after"}}); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"after"`) {
		t.Fatalf("the watch did not outlive the read timeout: %q", line)
	}
}

// The embedded etcd's port is no way in: without the server's own key, a
// client on the host cannot read or write the store.
func TestIntegrationEmbeddedEtcdLocked(t *testing.T) {
	integration(t)
	s, _ := testenv.StartServer(t, apiserver.Options{})
	u := s.EtcdClientURL()
	if u == "" {
		t.Fatal("no embedded etcd client URL")
	}
	for _, cfg := range []*tls.Config{nil, {InsecureSkipVerify: true}} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 2 * time.Second, TLS: cfg, Logger: zap.NewNop()})
		if err != nil {
			continue // refused at once: fine
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = cli.Put(ctx, "/drover/o/apikeys/key-evil", `{"spec":{"role":"admin"}}`)
		cancel()
		cli.Close()
		if err == nil {
			t.Fatalf("wrote the store through %s with TLS %v", u, cfg)
		}
	}
	// The control: with the server's own key (the server's user only) the
	// same URL answers, so the refusals above were the lock, not a bad URL.
	dir := filepath.Join(filepath.Dir(s.CredentialsPath()), "etcd-tls")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = cli.Get(ctx, "/drover/ready")
	cancel()
	cli.Close()
	if err != nil {
		t.Fatalf("the server's own key cannot reach %s: %v", u, err)
	}
	for _, f := range []string{"etcd-tls/key.pem", "credentials.json"} {
		fi, err := os.Stat(filepath.Join(filepath.Dir(s.CredentialsPath()), f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v; want mode 0600", f, fi, err)
		}
	}
}

// One client address cannot take every connection the server can hold: past
// MaxConnsPerClient it gets 429 and a closed connection, and its share comes
// back as it closes connections (issue 9, defect 3).
func TestIntegrationConnectionsCappedPerClient(t *testing.T) {
	integration(t)
	s, cl := testenv.StartServer(t, apiserver.Options{MaxConnsPerClient: 30})
	host := strings.TrimPrefix(s.URL(), "http://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 30; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c) // idle: sends nothing
	}
	time.Sleep(200 * time.Millisecond) // let the server accept them all
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(answer), "HTTP/1.1 429") || !strings.Contains(string(answer), "TooManyConnections") {
		t.Fatalf("connection 31 from one address: got %q, want a 429 and a close", answer)
	}
	if _, _, err := cl.Stacks().List(context.Background(), client.ListOptions{}); err == nil {
		t.Fatal("a request got through with the address's connections all held")
	}
	for _, c := range held[:5] {
		c.Close()
	}
	held = held[5:]
	testenv.Eventually(t, "requests served again once the client closed some connections", 10*time.Second, func() error {
		_, _, err := cl.Stacks().List(context.Background(), client.ListOptions{})
		return err
	})
}
