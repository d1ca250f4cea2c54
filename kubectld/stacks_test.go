package kubectld_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/lbtest"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/kubectld"
)

// waitApplied waits until kubectld has acted on the stack's generation.
func waitApplied(t *testing.T, e *env, id string, state string) *api.Stack {
	t.Helper()
	var st *api.Stack
	testenv.Eventually(t, "stack "+id+" "+state, 60*time.Second, func() error {
		var err error
		st, err = e.eng.Stacks().Get(context.Background(), id)
		if err != nil {
			return err
		}
		if st.Status.ObservedGeneration != st.Generation || st.Status.State != state {
			return fmt.Errorf("generation %d observed %d, state %q: %s", st.Generation, st.Status.ObservedGeneration, st.Status.State, st.Status.Message)
		}
		return nil
	})
	return st
}

func waitGone(t *testing.T, e *env, id string) {
	t.Helper()
	testenv.Eventually(t, "stack "+id+" removed", 60*time.Second, func() error {
		st, err := e.eng.Stacks().Get(context.Background(), id)
		if api.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("still there: %s %s", st.Status.State, st.Status.Message)
	})
}

// writesStill fails the test if any controller (the engine's,
// kubernetes-agent, kubectld) keeps writing once things settled.
func writesStill(t *testing.T, e *env) {
	t.Helper()
	time.Sleep(2 * time.Second)
	before := lbtest.Writes(e.regs...)
	if before == 0 {
		t.Fatal("no write counters read: the check would prove nothing")
	}
	time.Sleep(4 * time.Second)
	if after := lbtest.Writes(e.regs...); after != before {
		t.Errorf("controllers kept writing after the last change: %v writes in 4 s", after-before)
	}
}

func templateStack(t *testing.T, e *env) {
	ctx := context.Background()
	core := e.kube.Client.CoreV1()
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: three}\nspec:\n  ports: [{port: 80}]\n  selector: {app: three}\n"
	v1 := map[string]string{
		"app.yaml":  cm("one", "", "${GREETING}") + "---\n" + cm("two", "", "2"),
		"more.yaml": svc + "---\n" + cm("four", "", "4"),
	}
	// A missing answer is refused by the engine, naming it.
	_, err := e.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "shop"}, Spec: api.StackSpec{Kind: api.StackKubernetes, Namespace: "shop", Templates: v1}})
	if !api.IsStatus(err, 422) || !strings.Contains(err.Error(), "spec.answers") || !strings.Contains(err.Error(), "${GREETING}") {
		t.Fatalf("a stack without its answers: %v", err)
	}
	st, err := e.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "shop"}, Spec: api.StackSpec{Kind: api.StackKubernetes, Namespace: "shop", Templates: v1, Answers: map[string]string{"GREETING": "hello"}}})
	if err != nil {
		t.Fatal(err)
	}
	st = waitApplied(t, e, st.ID, kubectld.PhaseActive)
	if len(st.Status.Objects) != 4 {
		t.Errorf("status.objects = %v, want 4", st.Status.Objects)
	}
	ns, err := core.Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if err != nil || ns.Annotations[kubectld.AnnotationCreatedBy] != st.ID {
		t.Fatalf("namespace shop: %v %v", ns, err)
	}
	one, err := core.ConfigMaps("shop").Get(ctx, "one", metav1.GetOptions{})
	if err != nil || one.Data["v"] != "hello" || one.Labels[kubectld.LabelStack] != st.ID {
		t.Fatalf("configmap one: %v %v", one, err)
	}
	// Something else in the namespace, and an object someone took over.
	if _, err := core.ConfigMaps("shop").Create(ctx, cmObj("foreign"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	four, _ := core.ConfigMaps("shop").Get(ctx, "four", metav1.GetOptions{})
	four.Labels[kubectld.LabelStack] = "someone-else"
	if _, err := core.ConfigMaps("shop").Update(ctx, four, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	three, _ := core.Services("shop").Get(ctx, "three", metav1.GetOptions{})
	// The stack is named after its namespace: it stands for it in the
	// engine (kubernetes-agent makes no second stack, and puts the
	// namespace's Services in this one).
	testenv.Eventually(t, "Service three in the engine, in stack shop", 30*time.Second, func() error {
		svcs, _, err := e.eng.Services().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil {
			return err
		}
		for _, s := range svcs {
			if s.Name == "three" {
				return nil
			}
		}
		return fmt.Errorf("services of stack shop: %d", len(svcs))
	})
	if sts, _, _ := e.eng.Stacks().List(ctx, client.ListOptions{Name: "shop"}); len(sts) != 1 {
		t.Errorf("%d stacks named shop", len(sts))
	}

	// Upgrade: one changed, two and four dropped, five added, three as it was.
	v2 := map[string]string{
		"app.yaml":  cm("one", "", "${GREETING} again") + "---\n" + cm("five", "", "5"),
		"more.yaml": svc,
	}
	st.Spec.Templates = v2
	if st, err = e.eng.Stacks().Update(ctx, st.ID, st); err != nil {
		t.Fatal(err)
	}
	st = waitApplied(t, e, st.ID, kubectld.PhaseActive)
	if v := cmValue(t, e, "shop", "one"); v != "hello again" {
		t.Errorf("one = %q after the upgrade", v)
	}
	if v := cmValue(t, e, "shop", "five"); v != "5" {
		t.Errorf("five = %q after the upgrade", v)
	}
	if v := cmValue(t, e, "shop", "two"); v != "" {
		t.Errorf("two still there after the upgrade dropped it")
	}
	if v := cmValue(t, e, "shop", "four"); v != "4" {
		t.Errorf("four, taken over by someone else, was pruned")
	}
	if v := cmValue(t, e, "shop", "foreign"); v != "x" {
		t.Errorf("an object the stack never owned was touched")
	}
	if s, _ := core.Services("shop").Get(ctx, "three", metav1.GetOptions{}); s.ResourceVersion != three.ResourceVersion {
		t.Errorf("service three was rewritten (%s -> %s) though its template did not change", three.ResourceVersion, s.ResourceVersion)
	}
	writesStill(t, e)

	// Roll back: the previous templates again.
	if st.Status.PreviousSpec == nil {
		t.Fatal("no previousSpec kept")
	}
	st.Spec = *st.Status.PreviousSpec
	if st, err = e.eng.Stacks().Update(ctx, st.ID, st); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, e, st.ID, kubectld.PhaseActive)
	if v := cmValue(t, e, "shop", "one"); v != "hello" {
		t.Errorf("one = %q after the rollback", v)
	}
	if v := cmValue(t, e, "shop", "two"); v != "2" {
		t.Errorf("two = %q after the rollback", v)
	}
	if v := cmValue(t, e, "shop", "five"); v != "" {
		t.Errorf("five still there after the rollback")
	}

	// A template that fails is reported, and the stack stays as it was.
	st, _ = e.eng.Stacks().Get(ctx, st.ID)
	st.Spec.Templates = map[string]string{"bad.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\ndata: {v: [1]}\n"}
	if st, err = e.eng.Stacks().Update(ctx, st.ID, st); err != nil {
		t.Fatal(err)
	}
	st = waitApplied(t, e, st.ID, kubectld.PhaseError)
	if !strings.Contains(st.Status.LastError, "bad.yaml: document 1") {
		t.Errorf("lastError = %q, want it to name the document", st.Status.LastError)
	}
	if v := cmValue(t, e, "shop", "one"); v != "hello" {
		t.Errorf("one = %q after a refused upgrade", v)
	}

	// Removal: every object the stack owns, then the namespace it made.
	if _, err := e.eng.Stacks().Delete(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	waitGone(t, e, st.ID)
	testenv.Eventually(t, "namespace shop gone", 90*time.Second, func() error {
		_, err := core.Namespaces().Get(ctx, "shop", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("namespace shop: %v", err)
	})
}

func cmObj(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": "x"}}
}

// cmValue reads data.v of a ConfigMap ("" when it does not exist).
func cmValue(t *testing.T, e *env, ns, name string) string {
	t.Helper()
	c, err := e.kube.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return c.Data["v"]
}

func helmStack(t *testing.T, e *env) {
	ctx := context.Background()
	core := e.kube.Client.CoreV1()
	chart := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
		"values.yaml": "greeting: hello\nextra: false\n",
		"templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-cfg}
data: {v: {{ .Values.greeting | quote }}}
`,
		"templates/extra.yaml": `{{- if .Values.extra }}
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-extra}
data: {v: "extra"}
{{- end }}
`,
	}
	st, err := e.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "demo"}, Spec: api.StackSpec{Kind: api.StackKubernetes, Namespace: "charts", Templates: chart}})
	if err != nil {
		t.Fatal(err)
	}
	st = waitApplied(t, e, st.ID, kubectld.PhaseActive)
	if st.Status.Release != "demo" || st.Status.ReleaseRevision != 1 || cmValue(t, e, "charts", "demo-cfg") != "hello" {
		t.Fatalf("installed: release %s revision %d, demo-cfg %q", st.Status.Release, st.Status.ReleaseRevision, cmValue(t, e, "charts", "demo-cfg"))
	}
	st.Spec.Answers = map[string]string{"greeting": "hi", "extra": "true"}
	if st, err = e.eng.Stacks().Update(ctx, st.ID, st); err != nil {
		t.Fatal(err)
	}
	st = waitApplied(t, e, st.ID, kubectld.PhaseActive)
	if st.Status.ReleaseRevision != 2 || cmValue(t, e, "charts", "demo-cfg") != "hi" || cmValue(t, e, "charts", "demo-extra") != "extra" {
		t.Fatalf("upgraded: revision %d, demo-cfg %q, demo-extra %q", st.Status.ReleaseRevision, cmValue(t, e, "charts", "demo-cfg"), cmValue(t, e, "charts", "demo-extra"))
	}
	writesStill(t, e)
	st.Spec = *st.Status.PreviousSpec
	if st, err = e.eng.Stacks().Update(ctx, st.ID, st); err != nil {
		t.Fatal(err)
	}
	st = waitApplied(t, e, st.ID, kubectld.PhaseActive)
	if st.Status.ReleaseRevision != 3 || cmValue(t, e, "charts", "demo-cfg") != "hello" || cmValue(t, e, "charts", "demo-extra") != "" {
		t.Fatalf("rolled back: revision %d, demo-cfg %q, demo-extra %q", st.Status.ReleaseRevision, cmValue(t, e, "charts", "demo-cfg"), cmValue(t, e, "charts", "demo-extra"))
	}
	// Helm recorded it as a rollback, not as a third install.
	sec, err := core.Secrets("charts").Get(ctx, "sh.helm.release.v1.demo.v3", metav1.GetOptions{})
	if err != nil || sec.Labels["status"] != "deployed" {
		t.Fatalf("release secret v3: %v %v", sec, err)
	}
	if _, err := e.eng.Stacks().Delete(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	waitGone(t, e, st.ID)
	if v := cmValue(t, e, "charts", "demo-cfg"); v != "" {
		t.Errorf("demo-cfg left after the stack went")
	}
	secs, _ := core.Secrets("charts").List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
	if secs != nil && len(secs.Items) > 0 {
		t.Errorf("%d Helm release secrets left", len(secs.Items))
	}
}

// The CLI's path: drover stack up --kind kubernetes with files and with a
// chart folder, an upgrade, a rollback and rm, through the drover binary.
func cliStack(t *testing.T, e *env) {
	bin := testenv.DroverBinary(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	app := write("app/app.yaml", cm("web", "", "${GREETING}"))
	write("app/README.md", "not a manifest")
	answers := write("answers.txt", "GREETING=hello\n")
	drover := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append(args, "--credentials", e.srv.CredentialsPath())...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := drover("stack", "up", "web", "--kind", "kubernetes", "--namespace", "cli", "-f", filepath.Dir(app), "--wait", "60s")
	if err == nil || !strings.Contains(out, "${GREETING}") || !strings.Contains(out, "app.yaml") {
		t.Fatalf("stack up without answers: %v\n%s", err, out)
	}
	out, err = drover("stack", "up", "web", "--kind", "kubernetes", "--namespace", "cli", "-f", filepath.Dir(app), "--answers", answers, "--wait", "60s")
	if err != nil || !strings.Contains(out, "stack web is active") || !strings.Contains(out, "ConfigMap cli/web") {
		t.Fatalf("stack up: %v\n%s", err, out)
	}
	write("answers.txt", "GREETING=hi\n")
	if out, err = drover("stack", "up", "web", "--kind", "kubernetes", "--namespace", "cli", "-f", app, "--answers", answers, "--wait", "60s"); err != nil {
		t.Fatalf("stack up again: %v\n%s", err, out)
	}
	if v := cmValue(t, e, "cli", "web"); v != "hi" {
		t.Errorf("web = %q after the upgrade", v)
	}
	if out, err = drover("stack", "rollback", "web", "--wait", "60s"); err != nil || !strings.Contains(out, "stack web is active") {
		t.Fatalf("stack rollback: %v\n%s", err, out)
	}
	if v := cmValue(t, e, "cli", "web"); v != "hello" {
		t.Errorf("web = %q after the rollback", v)
	}
	write("chart/Chart.yaml", "apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
	write("chart/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tiny}\ndata: {v: {{ .Values.v | default \"none\" | quote }}}\n")
	out, err = drover("stack", "up", "tiny", "--kind", "kubernetes", "--namespace", "cli", "-f", filepath.Join(dir, "chart"), "--wait", "60s")
	if err != nil || !strings.Contains(out, "Helm release tiny revision 1") || cmValue(t, e, "cli", "tiny") != "none" {
		t.Fatalf("stack up of a chart: %v\n%s", err, out)
	}
	for _, st := range []string{"tiny", "web"} {
		if out, err = drover("stack", "rm", st); err != nil {
			t.Fatalf("stack rm %s: %v\n%s", st, err, out)
		}
	}
	testenv.Eventually(t, "the stacks' objects gone", 60*time.Second, func() error {
		if cmValue(t, e, "cli", "web")+cmValue(t, e, "cli", "tiny") != "" {
			return fmt.Errorf("still there")
		}
		return nil
	})
}
