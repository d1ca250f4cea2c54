package dns

import (
	"io"
	"log/slog"
	"net"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

type fakeWriter struct {
	msg *mdns.Msg
}

func (f *fakeWriter) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (f *fakeWriter) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 5353}
}
func (f *fakeWriter) WriteMsg(m *mdns.Msg) error {
	f.msg = m
	return nil
}
func (f *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (f *fakeWriter) Close() error                { return nil }
func (f *fakeWriter) TsigStatus() error           { return nil }
func (f *fakeWriter) TsigTimersOnly(bool)         {}
func (f *fakeWriter) Hijack()                     {}

// FuzzServeDNS feeds hostile packets through the real handler (with a
// populated record set): it must answer every parseable query with a
// message that packs, and never panic.
func FuzzServeDNS(f *testing.F) {
	s, err := New(Options{Engine: client.New("http://127.0.0.1:1", "", ""), Upstreams: []string{"127.0.0.1:1"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	s.setStack(&api.Stack{Meta: api.Meta{ID: "st", Name: "shop"}})
	s.setService(&api.Service{Meta: api.Meta{ID: "sv", Name: "web"}, Spec: api.ServiceSpec{StackID: "st", Kind: api.ServiceContainer}})
	s.setContainer(&api.Container{Meta: api.Meta{ID: "c", Name: "shop-web-1"}, Spec: api.ContainerSpec{ServiceID: "sv", StackID: "st"}, Status: api.ContainerStatus{State: "running", PrimaryIP: "127.0.0.2"}})
	s.setService(&api.Service{Meta: api.Meta{ID: "k", Name: "db", Labels: map[string]string{"io.drover.kubernetes.namespace": "ns", "io.drover.kubernetes.name": "db"}},
		Spec: api.ServiceSpec{StackID: "st", Kind: api.ServiceKubernetes, Ports: []api.ServicePort{{Name: "pg", Port: 5432}}}, Status: api.ServiceStatus{Endpoints: []api.Endpoint{{IP: "10.0.0.1", Hostname: "db-0"}}}})
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"web.shop.drover.internal.", mdns.TypeA}, {"_pg._tcp.db.ns.svc.cluster.local.", mdns.TypeSRV}, {"1.0.0.10.in-addr.arpa.", mdns.TypePTR}, {"web.", mdns.TypeA}, {"x.cluster.local.", mdns.TypeANY}} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(mdns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		w := &fakeWriter{}
		s.ServeDNS(w, m)
		if w.msg == nil {
			t.Fatal("no answer")
		}
		if _, err := w.msg.Pack(); err != nil {
			t.Fatalf("answer does not pack: %v", err)
		}
	})
}
