package stacks

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/drover/drover/api"
)

func file(t *testing.T, path string) File {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return File{Name: path, Content: b}
}

func byName(svcs []Service) map[string]Service {
	m := map[string]Service{}
	for _, s := range svcs {
		m[s.Name] = s
	}
	return m
}

func TestRancherStackUnchanged(t *testing.T) {
	rc := file(t, "testdata/rancher-compose.yml")
	svcs, err := Parse(context.Background(), "shop", []File{file(t, "testdata/rancher-docker-compose.yml")}, &rc, map[string]string{"MODE": "prod"})
	if err != nil {
		t.Fatal(err)
	}
	m := byName(svcs)
	if _, ok := m["log"]; ok || len(svcs) != 4 {
		t.Fatalf("sidekick log should fold into web; got %d services", len(svcs))
	}
	web := m["web"].Spec
	if *web.Scale != 3 || web.HealthCheck.Port != 80 || web.HealthCheck.RequestLine != "GET / HTTP/1.0" || !web.Upgrade.StartFirst || web.Upgrade.BatchSize != 2 {
		t.Fatalf("rancher-compose settings not applied: %+v", web)
	}
	if web.LaunchConfig.Environment["MODE"] != "prod" || web.LaunchConfig.Ports[0] != "8080:80/tcp" || web.LaunchConfig.PullImage != "always" {
		t.Fatalf("launch config: %+v", web.LaunchConfig)
	}
	if len(web.Sidekicks) != 1 || web.Sidekicks[0].Name != "log" || web.Sidekicks[0].Image != "busybox" {
		t.Fatalf("sidekicks: %+v", web.Sidekicks)
	}
	rules, _ := Affinity(web.LaunchConfig.Labels)
	if len(rules) != 2 || rules[0].On != OnContainerLabel || !rules[0].Soft || !rules[0].Not || rules[1].On != OnHostLabel || rules[1].Key != "zone" {
		t.Fatalf("affinity: %+v", rules)
	}
	mon := m["monitor"].Spec
	if !mon.Global || mon.Scale != nil || !mon.LaunchConfig.StartOnce {
		t.Fatalf("monitor: %+v", mon)
	}
	if m["ext"].Spec.Kind != api.ServiceExternal || m["ext"].Spec.ExternalIPs[0] != "10.1.1.1" {
		t.Fatalf("ext: %+v", m["ext"].Spec)
	}
	if lb := m["lb"].Spec; lb.Kind != api.ServiceLoadBalancer || lb.LBConfig.PortRules[0].SourcePort != 80 {
		t.Fatalf("lb: %+v", lb)
	}
}

func TestXDroverExtension(t *testing.T) {
	compose := `services:
  api:
    image: app:1
    x-drover:
      scale: 4
      health_check: {port: 8080, request_line: GET /healthz}
`
	svcs, err := Parse(context.Background(), "s", []File{{"docker-compose.yml", []byte(compose)}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *svcs[0].Spec.Scale != 4 || svcs[0].Spec.HealthCheck.Port != 8080 {
		t.Fatalf("%+v", svcs[0].Spec)
	}
}

func TestAnswersFillSettings(t *testing.T) {
	compose := "services:\n  api:\n    image: app:${TAG}\n    x-drover:\n      scale: ${SCALE:-1}\n"
	rc := &File{"rancher-compose.yml", []byte("services:\n  api:\n    scale: ${SCALE}\n")}
	svcs, err := Parse(context.Background(), "s", []File{{"docker-compose.yml", []byte(compose)}}, nil, map[string]string{"TAG": "2", "SCALE": "5"})
	if err != nil || *svcs[0].Spec.Scale != 5 || svcs[0].Spec.LaunchConfig.Image != "app:2" {
		t.Fatalf("x-drover answers: %v %+v", err, svcs)
	}
	svcs, err = Parse(context.Background(), "s", []File{{"docker-compose.yml", []byte("services:\n  api:\n    image: app\n")}}, rc, map[string]string{"SCALE": "4"})
	if err != nil || *svcs[0].Spec.Scale != 4 {
		t.Fatalf("rancher-compose answers: %v %+v", err, svcs)
	}
}

func TestErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, compose, rancher string
		file                   string
		line                   int
		contains               string
	}{
		{"yaml syntax", "services:\n  web:\n    image: [x\n", "", "docker-compose.yml", 2, "YAML"},
		{"unknown compose key", "services:\n  web:\n    image: x\n    imagez: y\n", "", "docker-compose.yml", 4, `unknown key "imagez"`},
		{"unknown x-drover key", "services:\n  web:\n    image: x\n    x-drover:\n      scale: 2\n      scael: 3\n", "", "docker-compose.yml", 6, "allowed: "},
		{"bad affinity", "services:\n  web:\n    image: x\n    labels:\n      io.rancher.scheduler.affinity:host_lable: a=b\n", "", "docker-compose.yml", 4, "unknown affinity"},
		{"missing sidekick", "services:\n  web:\n    image: x\n    labels:\n      io.drover.sidekicks: nope\n", "", "docker-compose.yml", 4, `sidekick "nope"`},
		{"unknown key after comments", "services:\n  web:\n    image: x\n    x-drover:\n      # the scale\n\n      scale: 2\n      health_check:\n        # a typo below\n        prot: 80\n", "", "docker-compose.yml", 10, `unknown key "prot"`},
		{"rancher unknown key", "services:\n  web:\n    image: x\n", "version: '2'\nservices:\n  web:\n    scael: 3\n", "rancher-compose.yml", 4, "scael"},
		{"negative scale", "services:\n  web:\n    image: x\n    x-drover: {scale: -1}\n", "", "docker-compose.yml", 2, "scale -1"},
		{"build", "services:\n  web:\n    build: .\n", "", "docker-compose.yml", 3, "build"},
		{"bad pull label", "services:\n  web:\n    image: x\n    labels:\n      io.rancher.container.pull_image: sometimes\n", "", "docker-compose.yml", 4, "always or never"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rc *File
			if tc.rancher != "" {
				rc = &File{"rancher-compose.yml", []byte(tc.rancher)}
			}
			_, err := Parse(context.Background(), "s", []File{{"docker-compose.yml", []byte(tc.compose)}}, rc, nil)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("want *Error, got %T %v", err, err)
			}
			if e.File != tc.file || e.Line != tc.line || !strings.Contains(e.Error(), tc.contains) {
				t.Fatalf("got %q (file %s line %d); want %s:%d containing %q", e.Error(), e.File, e.Line, tc.file, tc.line, tc.contains)
			}
		})
	}
}

func TestAffinityLabels(t *testing.T) {
	rules, err := Affinity(map[string]string{
		"io.drover.scheduler.affinity:host_label_soft_ne": "disk=hdd, zone=b",
		"io.rancher.scheduler.affinity:container":         "db-1",
		"unrelated": "x",
	})
	if err != nil || len(rules) != 3 {
		t.Fatalf("%v %+v", err, rules)
	}
	if r := rules[0]; r.On != OnHostLabel || !r.Soft || !r.Not || r.Key != "disk" || r.Value != "hdd" {
		t.Fatalf("%+v", r)
	}
	if r := rules[2]; r.On != OnContainer || r.Value != "db-1" || r.Soft || r.Not {
		t.Fatalf("%+v", r)
	}
	if _, err := Affinity(map[string]string{"io.rancher.scheduler.affinity:host_label": "novalue"}); err == nil {
		t.Fatal("want an error for a term without =")
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/rancher-docker-compose.yml"} {
		b, _ := os.ReadFile(p)
		f.Add(string(b), "")
	}
	rc, _ := os.ReadFile("testdata/rancher-compose.yml")
	f.Add("services:\n  web:\n    image: x\n", string(rc))
	f.Add("services: {a: {image: x, labels: {io.drover.sidekicks: b}}, b: {image: y}}", "")
	f.Fuzz(func(t *testing.T, compose, rancher string) {
		var r *File
		if rancher != "" {
			r = &File{"rancher-compose.yml", []byte(rancher)}
		}
		svcs, err := Parse(context.Background(), "fuzz", []File{{"docker-compose.yml", []byte(compose)}}, r, nil)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, s := range svcs {
			if s.Name == "" || s.Spec.LaunchConfig == nil {
				t.Fatalf("accepted service without name or launch config: %+v", s)
			}
		}
	})
}

func FuzzAffinity(f *testing.F) {
	f.Add("io.rancher.scheduler.affinity:host_label_soft_ne", "a=b,c=d")
	f.Add("io.drover.scheduler.affinity:container", "x")
	f.Fuzz(func(t *testing.T, key, value string) {
		rules, err := Affinity(map[string]string{key: value})
		if err != nil {
			return
		}
		for _, r := range rules {
			if r.On == "" || (r.On != OnContainer && r.Key == "") || r.String() == "" {
				t.Fatalf("bad rule %+v", r)
			}
		}
	})
}

// A load balancer's rule that names a service the stack lacks is refused
// at the rule's line, Rancher style or x-drover.
func TestLBRuleNamesAMissingService(t *testing.T) {
	compose := File{Name: "docker-compose.yml", Content: []byte(`version: "2"
services:
  web:
    image: nginx
  lb:
    image: rancher/lb-service-haproxy:v0.9.1
    ports: ["80:80"]
`)}
	rancher := File{Name: "rancher-compose.yml", Content: []byte(`version: "2"
services:
  lb:
    scale: 1
    lb_config:
      port_rules:
      - source_port: 80
        target_port: 8080
        service: web
      - source_port: 81
        target_port: 8080
        service: nope
`)}
	_, err := Parse(context.Background(), "shop", []File{compose}, &rancher, nil)
	if err == nil || err.Error() != `rancher-compose.yml:12: lb_config.port_rules[1].service: no service "nope" in stack "shop"` {
		t.Fatalf("got %v", err)
	}
	x := File{Name: "docker-compose.yml", Content: []byte(`services:
  web: {image: nginx}
  lb:
    image: drover/whatever
    x-drover:
      lb_config:
        port_rules:
        - {source_port: 80, target_port: 80, service: other/web}
        - {source_port: 81, target_port: 80, service: gone}
`)}
	if _, err := Parse(context.Background(), "shop", []File{x}, nil, nil); err == nil || !strings.Contains(err.Error(), `docker-compose.yml:9: lb_config.port_rules[1].service: no service "gone"`) {
		t.Fatalf("x-drover: got %v", err)
	}
	rancher.Content = []byte(strings.Replace(string(rancher.Content), "service: nope", "service: web", 1))
	svcs, err := Parse(context.Background(), "shop", []File{compose}, &rancher, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if s.Name == "lb" && (s.Spec.Kind != api.ServiceLoadBalancer || len(s.Spec.LBConfig.PortRules) != 2) {
			t.Fatalf("lb: %+v", s.Spec)
		}
	}
}

func TestLBRuleSelector(t *testing.T) {
	f := func(sel string) error {
		_, err := Parse(context.Background(), "shop", []File{{Name: "docker-compose.yml", Content: []byte(`services:
  web: {image: nginx, labels: {tier: front}}
  lb:
    image: rancher/lb-service-haproxy:v0.9.1
    x-drover:
      lb_config:
        port_rules:
        - {source_port: 80, target_port: 80, selector: "` + sel + `"}
`)}}, nil, nil)
		return err
	}
	if err := f("tier=front"); err != nil {
		t.Fatalf("a rule with a selector and no service: %v", err)
	}
	if err := f("tier in (front"); err == nil || !strings.Contains(err.Error(), "lb_config.port_rules[0].selector") {
		t.Fatalf("a bad selector: %v", err)
	}
}
