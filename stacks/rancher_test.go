package stacks

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the golden want.json files of testdata/rancher")

// loadFixture reads a catalog-version-shaped folder.
func loadFixture(t testing.TB, dir string) ([]File, *File, map[string]string) {
	t.Helper()
	var compose []File
	var rancher *File
	for _, n := range []string{"docker-compose.yml.tpl", "docker-compose.yml"} {
		if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
			compose = append(compose, File{Name: n, Content: b})
			break
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "rancher-compose.yml")); err == nil {
		rancher = &File{Name: "rancher-compose.yml", Content: b}
	}
	answers := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(dir, "answers.yml")); err == nil {
		if err := yaml.Unmarshal(b, &answers); err != nil {
			t.Fatal(err)
		}
	}
	return compose, rancher, answers
}

// Every fixture in testdata/rancher (one per Rancher 1.x shape) parses to
// the services in its want.json, field by field; -update rewrites them
// (read the diff: it is the test's claim).
func TestRancherFixtures(t *testing.T) {
	dirs, _ := filepath.Glob("testdata/rancher/*")
	if len(dirs) < 5 {
		t.Fatalf("only %d fixtures", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			compose, rancher, answers := loadFixture(t, dir)
			res, err := ParseFull(context.Background(), "demo", compose, rancher, answers)
			if err != nil {
				t.Fatal(err)
			}
			var warnings []string
			for _, w := range res.Warnings {
				warnings = append(warnings, w.String())
			}
			sort.Strings(warnings)
			got, _ := json.MarshalIndent(map[string]any{"services": res.Services, "warnings": warnings, "answers": res.Answers}, "", "  ")
			golden := filepath.Join(dir, "want.json")
			if *update {
				os.WriteFile(golden, append(got, '\n'), 0o644)
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./stacks -run TestRancherFixtures -update)", err)
			}
			if strings.TrimSpace(string(want)) != strings.TrimSpace(string(got)) {
				t.Errorf("%s differs from what the files parse to now:\n%s", golden, got)
			}
		})
	}
}

func parseFixture(t *testing.T, dir string, answers map[string]string) (*Result, error) {
	t.Helper()
	compose, rancher, given := loadFixture(t, dir)
	if answers == nil {
		answers = given
	}
	return ParseFull(context.Background(), "demo", compose, rancher, answers)
}

func TestRancherMeaningKept(t *testing.T) {
	res, err := parseFixture(t, "testdata/rancher/v1-catalog", nil)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]Service{}
	for _, s := range res.Services {
		by[s.Name] = s
	}
	db, app := by["db"], by["app"]
	if got := db.Spec.LaunchConfig.Labels["io.rancher.scheduler.affinity:container_label_ne"]; got != "io.rancher.stack_service.name=demo/db" {
		t.Errorf("$${stack_name}/$${service_name} became %q", got)
	}
	if len(db.Spec.Links) != 0 {
		t.Errorf("volumes_from a sidekick made links %v", db.Spec.Links)
	}
	if db.Spec.LaunchConfig.NetworkMode != "host" || db.Spec.LaunchConfig.LogDriver != "json-file" || db.Spec.LaunchConfig.LogOptions["max-size"] != "10m" || db.Spec.LaunchConfig.VolumeDriver != "rancher-nfs" {
		t.Errorf("v1 keys lost: %+v", db.Spec.LaunchConfig)
	}
	if app.Spec.Metadata["ca.crt"] == nil || app.Spec.HealthCheck == nil || app.Spec.HealthCheck.Quorum != 1 || *app.Spec.Scale != 2 {
		t.Errorf("rancher-compose settings lost: %+v", app.Spec)
	}
	if res.Answers["pg_version"] != "10" || res.Catalog == nil || res.Catalog.UUID != "example-0" {
		t.Errorf("question defaults or catalog lost: %v %+v", res.Answers, res.Catalog)
	}
}

func TestRancherQuestionErrors(t *testing.T) {
	_, err := parseFixture(t, "testdata/rancher/v1-catalog", map[string]string{})
	if err == nil || !strings.Contains(err.Error(), "greeting") || !strings.Contains(err.Error(), "ca_crt") || !strings.HasPrefix(err.Error(), "rancher-compose.yml: questions:") {
		t.Errorf("missing required answers: %v", err)
	}
	cases := map[string]string{"pg_version": "8", "app_scale": "two", "admin_enabled": "maybe"}
	for k, v := range cases {
		answers := map[string]string{"greeting": "x", "ca_crt": "x", k: v}
		if _, err := parseFixture(t, "testdata/rancher/v1-catalog", answers); err == nil || !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), v) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
}

func TestRancherErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		file, content, want string
	}{
		{"docker-compose.yml.tpl", "version: '2'\nservices:\n  web:\n    image: {{ .Values.x | nosuchfunc }}\n", "docker-compose.yml.tpl:4: template: "},
		{"docker-compose.yml.tpl", "version: '2'\nservices:\n{{ if }}\n", "docker-compose.yml.tpl:3: template: "},
		{"docker-compose.yml", "web:\n  image: nginx\n  bogus_key: 1\n", "docker-compose.yml:3: services.web"},
		{"docker-compose.yml", "web:\n  image: nginx\n  health_check:\n    port: 80\n    nope: 1\n", "docker-compose.yml:5: services.web.health_check"},
	}
	for _, c := range cases {
		_, err := ParseFull(context.Background(), "demo", []File{{Name: c.file, Content: []byte(c.content)}}, nil, nil)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want prefix %q", c.content, err, c.want)
		}
	}
	rc := &File{Name: "rancher-compose.yml", Content: []byte("web:\n  scale: 2\n  bogus: 1\n")}
	_, err := ParseFull(context.Background(), "demo", []File{{Name: "docker-compose.yml", Content: []byte("web:\n  image: nginx\n")}}, rc, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "rancher-compose.yml:3: services.web.bogus") {
		t.Errorf("rancher-compose v1 unknown key: %v", err)
	}
}

func TestSplitPreserveQuotes(t *testing.T) {
	got := SplitPreserveQuotes(`a  b "c d" 'e f' g`)
	want := []string{"a", "b", `"c d"`, `'e f'`, "g"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q", got)
	}
}

func FuzzRenderTemplate(f *testing.F) {
	f.Add("web:\n  image: {{ .Values.img | default \"nginx\" }}\n{{ range until (atoi .Values.n) }}  # {{ . }}\n{{ end }}")
	f.Add("{{ splitPreserveQuotes .Values.args }} {{ .Stack.Name }}")
	f.Add("{{ if")
	f.Fuzz(func(t *testing.T, tpl string) {
		out, err := RenderTemplate(File{Name: "f.tpl", Content: []byte(tpl)}, "demo", map[string]string{"img": "x", "n": "3", "args": `a "b c"`})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.tpl") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(out.Content) > maxRendered {
			t.Fatalf("rendered %d bytes", len(out.Content))
		}
	})
}

func FuzzNormalizeCompose(f *testing.F) {
	for _, dir := range []string{"v1-catalog", "lb-v1", "rancher-keys"} {
		b, _ := os.ReadFile(filepath.Join("testdata/rancher", dir, "docker-compose.yml"))
		f.Add(b)
	}
	f.Add([]byte("a:\n  net: host\n  log_opt: [1]\n  volume_driver: {}\n  volumes: [x:/y, {source: z, target: /w}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		x := &extras{}
		out, err := normalizeCompose(File{Name: "dc.yml", Content: b}, x)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "dc.yml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// What it makes parses as YAML again.
		var n yaml.Node
		if err := yaml.Unmarshal(out.Content, &n); err != nil {
			t.Fatalf("normalized output is not YAML: %v\n%s", err, out.Content)
		}
	})
}

// Rancher rendered templates with Go before 1.14, which ignored words
// after a parenthesised first one; so does drover.
func TestTemplateLegacyArguments(t *testing.T) {
	tpl := "{{- if (ne .Values.LB \"true\") and .Values.PORT }}yes{{ else }}no{{ end }}"
	for lb, want := range map[string]string{"false": "yes", "true": "no"} {
		out, err := RenderTemplate(File{Name: "t.tpl", Content: []byte(tpl)}, "demo", map[string]string{"LB": lb})
		if err != nil || string(out.Content) != want {
			t.Errorf("LB=%s: %q %v, want %q", lb, out.Content, err, want)
		}
	}
}

// Rancher looked rancher-compose settings up by service name: an entry
// naming no service did nothing. drover says so, and goes on.
func TestRancherUnknownServiceWarns(t *testing.T) {
	rc := &File{Name: "rancher-compose.yml", Content: []byte("services:\n  wbe:\n    scale: 3\n")}
	res, err := ParseFull(context.Background(), "demo", []File{{Name: "docker-compose.yml", Content: []byte("services:\n  web:\n    image: x\n")}}, rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].String(), `rancher-compose.yml:2: service "wbe" is not in the compose file`) {
		t.Errorf("warnings: %v", res.Warnings)
	}
}

// An unset ${VAR} is named in a warning, and refused where it leaves a
// field invalid ("app:" is no image).
func TestUnsetVariables(t *testing.T) {
	f := File{Name: "docker-compose.yml", Content: []byte("services:\n  web:\n    image: nginx\n    environment:\n      MODE: ${MODE}\n")}
	res, err := ParseFull(context.Background(), "demo", []File{f}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || res.Warnings[0].String() != "docker-compose.yml:5: ${MODE} is not set (no answer, no default): it is an empty string" {
		t.Errorf("warnings: %v", res.Warnings)
	}
	f.Content = []byte("services:\n  web:\n    image: app:${TAG}\n")
	_, err = ParseFull(context.Background(), "demo", []File{f}, nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "docker-compose.yml:3: services.web.image: \"app:\" is not an image reference") {
		t.Errorf("image app: %v", err)
	}
}
