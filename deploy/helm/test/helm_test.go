// Package helmtest lints and renders the jisr Helm chart (deploy/helm/jisr)
// through the Helm Go library, as `helm lint` and `helm template` do, and
// checks the rendered objects. No cluster is involved: nothing is installed.
// A module of its own (outside go.work), so that Helm's dependencies stay out
// of the jisr binary's.
package helmtest

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const chartDir = "../jisr"

// values reads a values file and adds the federation file, as
// `--set-file federation=deploy/federation.yaml` does.
func values(t *testing.T, file string) map[string]any {
	t.Helper()
	vals, err := chartutil.ReadValuesFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fed, err := os.ReadFile("../../federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	vals["federation"] = string(fed)
	vals["governancePub"] = governancePub
	return vals
}

// governancePub is a governance public key (Ed25519, PEM), as
// `--set-file governancePub=<certs>/governance/governance.pub` gives.
const governancePub = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAd3twHjxfx1peGJR0eIhussRTyf3utjEyllMKAleDa4I=
-----END PUBLIC KEY-----
`

// governancePubArg is where every component reads that key: the federation
// ConfigMap, mounted beside the file.
const governancePubArg = "--governance-pub=/etc/jisr/federation/governance.pub"

// objects is a rendered release, by kind and name.
type objects map[string]map[string][]byte

func (o objects) get(t *testing.T, kind, name string, into any) {
	t.Helper()
	raw, ok := o[kind][name]
	if !ok {
		t.Fatalf("no %s %q rendered; %s: %v", kind, name, kind, keys(o[kind]))
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// newInstall is `helm template jisr --namespace jisr --kube-version 1.31`:
// a client-only dry run.
func newInstall(t *testing.T) *action.Install {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion("v1.31.0")
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace, install.KubeVersion = "jisr", "jisr", kv
	return install
}

func render(t *testing.T, vals map[string]any) objects {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := newInstall(t).Run(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	manifests := releaseutil.SplitManifests(rel.Manifest)
	for _, h := range rel.Hooks {
		manifests[h.Path] = h.Manifest
	}
	out := objects{}
	for _, m := range manifests {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(m), &head); err != nil {
			t.Fatalf("%v\n%s", err, m)
		}
		if head.Kind == "" {
			continue
		}
		if out[head.Kind] == nil {
			out[head.Kind] = map[string][]byte{}
		}
		if _, dup := out[head.Kind][head.Metadata.Name]; dup {
			t.Fatalf("%s %s rendered twice", head.Kind, head.Metadata.Name)
		}
		out[head.Kind][head.Metadata.Name] = []byte(m)
	}
	return out
}

func TestLint(t *testing.T) {
	for file, vals := range map[string]map[string]any{
		"values.yaml":                     hubValues(t),
		"ci/three-ministries-values.yaml": values(t, "../jisr/ci/three-ministries-values.yaml"),
	} {
		l := lint.All(chartDir, vals, "jisr", false)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("%s: lint: %s", file, m)
			}
		}
	}
}

// The hub and three ministries' adapters: replicas, probes, the SPIFFE CSI
// volume, security contexts, scrape annotations and the network policies.
func TestTemplateThreeMinistries(t *testing.T) {
	objs := render(t, values(t, "../jisr/ci/three-ministries-values.yaml"))

	// The federation's ConfigMap carries, beside the file, every descriptor
	// set it names, byte for byte (jisr loads each ministry's services from
	// them).
	var fedCM corev1.ConfigMap
	objs.get(t, "ConfigMap", "jisr-federation", &fedCM)
	for _, name := range []string{"civil-registry.binpb", "tax.binpb", "cnss.binpb", "health.binpb"} {
		want, err := os.ReadFile("../../" + name)
		if err != nil {
			t.Fatal(err)
		}
		if got := fedCM.BinaryData[name]; !bytes.Equal(got, want) {
			t.Errorf("the federation ConfigMap's %s: %d bytes, deploy/%s has %d", name, len(got), name, len(want))
		}
	}

	// The governance key that verifies signed federation versions travels
	// beside the file, and every component is told where it is.
	if got := fedCM.Data["governance.pub"]; strings.TrimSpace(got) != strings.TrimSpace(governancePub) {
		t.Errorf("the federation ConfigMap's governance.pub: %q", got)
	}

	var nats appsv1.StatefulSet
	objs.get(t, "StatefulSet", "jisr-nats", &nats)
	if a := nats.Spec.Template.Spec.Containers[0].Args; !slices.Contains(a, governancePubArg) {
		t.Errorf("NATS args lack %s: %v", governancePubArg, a)
	}
	if *nats.Spec.Replicas != 3 {
		t.Errorf("NATS replicas %d, want 3", *nats.Spec.Replicas)
	}
	nc := nats.Spec.Template.Spec.Containers[0]
	if !slices.Contains(nc.Args, "--routes=tls://jisr-nats-0.jisr-nats-headless.jisr.svc:6222,tls://jisr-nats-1.jisr-nats-headless.jisr.svc:6222,tls://jisr-nats-2.jisr-nats-headless.jisr.svc:6222") {
		t.Errorf("NATS routes: %v", nc.Args)
	}
	if nc.ReadinessProbe == nil || nc.ReadinessProbe.HTTPGet.Path != "/healthz?js-server-only=true" {
		t.Errorf("NATS readiness: %+v", nc.ReadinessProbe)
	}
	if len(nats.Spec.VolumeClaimTemplates) != 1 {
		t.Error("NATS has no volume for JetStream")
	}

	var gw appsv1.StatefulSet
	objs.get(t, "StatefulSet", "jisr-gateway", &gw)
	if *gw.Spec.Replicas != 3 {
		t.Errorf("gateway replicas %d, want the values' 3", *gw.Spec.Replicas)
	}
	gc := gw.Spec.Template.Spec.Containers[0]
	if p := gc.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "http" {
		t.Errorf("gateway readiness: %+v", p)
	}
	if !slices.Contains(gc.Args, "--instance=$(POD_NAME)") {
		t.Errorf("gateway instance is not the pod's stable name: %v", gc.Args)
	}
	if !slices.Contains(gc.Args, governancePubArg) {
		t.Errorf("gateway args lack %s: %v", governancePubArg, gc.Args)
	}
	// Each replica's audit checkpoint key is projected from the secret.
	for _, v := range gw.Spec.Template.Spec.Volumes {
		if v.Name != "keys" {
			continue
		}
		var paths []string
		for _, s := range v.Projected.Sources {
			for _, it := range s.Secret.Items {
				paths = append(paths, it.Path)
			}
		}
		for _, want := range []string{"citizen.key", "consent-jwks.json", "audit/jisr-gateway-0.key", "audit/jisr-gateway-2.pub"} {
			if !slices.Contains(paths, want) {
				t.Errorf("gateway keys volume lacks %s: %v", want, paths)
			}
		}
		for _, p := range paths {
			if strings.HasPrefix(p, "consent/") {
				t.Errorf("the gateway holds a consent signing key: %s", p)
			}
		}
	}

	// The consent service: its signing keys copied, 0600, into a memory
	// volume before it starts (a group-readable key file is refused).
	var cs appsv1.Deployment
	objs.get(t, "Deployment", "jisr-consent", &cs)
	if a := cs.Spec.Template.Spec.Containers[0].Args; !slices.Contains(a, governancePubArg) {
		t.Errorf("consent args lack %s: %v", governancePubArg, a)
	}
	if cs.Spec.Template.Spec.ServiceAccountName != "jisr-consent" {
		t.Errorf("consent service runs as %s", cs.Spec.Template.Spec.ServiceAccountName)
	}
	if ic := cs.Spec.Template.Spec.InitContainers; len(ic) != 1 || !strings.Contains(strings.Join(ic[0].Command, " "), "chmod 0600 /keys/consent/*") {
		t.Errorf("consent key copy: %+v", ic)
	}
	for _, v := range cs.Spec.Template.Spec.Volumes {
		switch v.Name {
		case "keys":
			if v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
				t.Errorf("consent keys volume: %+v", v)
			}
		case "secret":
			if it := v.Projected.Sources[0].Secret.Items; len(it) != 1 || it[0].Path != "consent/1764000000-k1.key" {
				t.Errorf("consent secret items: %+v", it)
			}
		}
	}
	var pdb policyv1.PodDisruptionBudget
	objs.get(t, "PodDisruptionBudget", "jisr-gateway", &pdb)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("gateway PDB: %+v", pdb.Spec)
	}
	objs.get(t, "PodDisruptionBudget", "jisr-nats", &pdb)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("NATS PDB: %+v", pdb.Spec)
	}

	var job batchv1.Job
	objs.get(t, "Job", "jisr-nats-init", &job)
	if a := job.Spec.Template.Spec.Containers[0].Args; !slices.Contains(a, "--replicas=3") || a[0] != "nats" || a[1] != "init" {
		t.Errorf("nats init job: %v", a)
	}

	pods := map[string]corev1.PodSpec{"nats": nats.Spec.Template.Spec, "gateway": gw.Spec.Template.Spec, "consent": cs.Spec.Template.Spec, "nats-init": job.Spec.Template.Spec}
	annotations := map[string]map[string]string{"nats": nats.Spec.Template.Annotations, "gateway": gw.Spec.Template.Annotations}
	for _, m := range []struct {
		member   string
		replicas int32
	}{{"civil-registry", 1}, {"cnss", 2}, {"tax", 1}} {
		var d appsv1.Deployment
		objs.get(t, "Deployment", "jisr-adapter-"+m.member, &d)
		if *d.Spec.Replicas != m.replicas {
			t.Errorf("%s adapter replicas %d, want %d", m.member, *d.Spec.Replicas, m.replicas)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if !slices.Contains(c.Args, "--member="+m.member) || !slices.Contains(c.Args, "--nats=tls://jisr-nats.jisr.svc:4222") || !slices.Contains(c.Args, governancePubArg) {
			t.Errorf("%s adapter args: %v", m.member, c.Args)
		}
		// Several replicas share one durable event consumer: one event in
		// flight, else a citizen's two events could reach the backend at once.
		if got := slices.Contains(c.Args, "--event-in-flight=1"); got != (m.replicas > 1) {
			t.Errorf("%s adapter (%d replicas) args: %v: --event-in-flight=1 %v, want %v", m.member, m.replicas, c.Args, got, m.replicas > 1)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
			t.Errorf("%s adapter has no readiness probe", m.member)
		}
		if d.Spec.Template.Spec.ServiceAccountName != "jisr-adapter-"+m.member {
			t.Errorf("%s adapter runs as %s: SPIRE's entry selects jisr-adapter-%s", m.member, d.Spec.Template.Spec.ServiceAccountName, m.member)
		}
		var sa corev1.ServiceAccount
		objs.get(t, "ServiceAccount", "jisr-adapter-"+m.member, &sa)
		pods["adapter-"+m.member] = d.Spec.Template.Spec
		annotations["adapter-"+m.member] = d.Spec.Template.Annotations
	}
	if _, ok := objs["Deployment"]["jisr-adapter-health"]; ok {
		t.Error("an adapter for a ministry the values do not list")
	}

	for name, pod := range pods {
		checkPod(t, name, pod)
	}
	for name, a := range annotations {
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] == "" || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("%s: scrape annotations %v", name, a)
		}
	}

	checkPolicies(t, objs)
}

// checkPod: the Workload API from the SPIFFE CSI driver, and a non-root,
// read-only container with resources.
func checkPod(t *testing.T, name string, pod corev1.PodSpec) {
	t.Helper()
	csi := false
	for _, v := range pod.Volumes {
		if v.Name == "spiffe-workload-api" && v.CSI != nil && v.CSI.Driver == "csi.spiffe.io" && v.CSI.ReadOnly != nil && *v.CSI.ReadOnly {
			csi = true
		}
	}
	if !csi {
		t.Errorf("%s: no read-only SPIFFE CSI volume", name)
	}
	if ps := pod.SecurityContext; ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		t.Errorf("%s: pod may run as root", name)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a Kubernetes API token it does not need", name)
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s/%s: security context %+v", name, c.Name, sc)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: no CPU request or memory limit", name, c.Name)
		}
		if strings.HasPrefix(name, "consent") && c.Name == "keys" {
			continue // the key copy needs no SVID
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["SPIFFE_ENDPOINT_SOCKET"] != "unix:///spiffe-workload-api/spire-agent.sock" {
			t.Errorf("%s/%s: SPIFFE_ENDPOINT_SOCKET %q", name, c.Name, env["SPIFFE_ENDPOINT_SOCKET"])
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || m.Name == "spiffe-workload-api" && m.MountPath == "/spiffe-workload-api" && m.ReadOnly
		}
		if !mounted {
			t.Errorf("%s/%s: the Workload API socket is not mounted", name, c.Name)
		}
	}
}

// ports lists a rule's ports as "port/proto".
func ports(ps []networkingv1.NetworkPolicyPort) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s/%s", p.Port.String(), *p.Protocol))
	}
	slices.Sort(out)
	return out
}

func ingressPorts(np networkingv1.NetworkPolicy) []string {
	var out []string
	for _, r := range np.Spec.Ingress {
		out = append(out, ports(r.Ports)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func egressPorts(np networkingv1.NetworkPolicy) []string {
	var out []string
	for _, r := range np.Spec.Egress {
		out = append(out, ports(r.Ports)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// checkPolicies: a default deny, then only the topology's ports, each from
// the peers that use it.
func checkPolicies(t *testing.T, objs objects) {
	t.Helper()
	var deny networkingv1.NetworkPolicy
	objs.get(t, "NetworkPolicy", "jisr-default-deny", &deny)
	if len(deny.Spec.Ingress)+len(deny.Spec.Egress) != 0 || len(deny.Spec.PolicyTypes) != 2 || deny.Spec.PodSelector.MatchLabels["app.kubernetes.io/instance"] != "jisr" {
		t.Errorf("default deny: %+v", deny.Spec)
	}
	for _, c := range []struct {
		name            string
		ingress, egress []string
	}{
		{"jisr-nats", []string{"4222/TCP", "6222/TCP", "8222/TCP", "9090/TCP"}, []string{"53/TCP", "53/UDP", "6222/TCP"}},
		{"jisr-gateway", []string{"7000/TCP", "8080/TCP"}, []string{"4222/TCP", "53/TCP", "53/UDP"}},
		{"jisr-consent", nil, []string{"4222/TCP", "53/TCP", "53/UDP"}},
		{"jisr-operator", nil, []string{"4222/TCP", "53/TCP", "53/UDP"}},
		{"jisr-adapter-cnss", []string{"7000/TCP", "9090/TCP"}, []string{"4222/TCP", "53/TCP", "53/UDP", "7100/TCP"}},
		{"jisr-adapter-tax", []string{"9090/TCP"}, []string{"4222/TCP", "53/TCP", "53/UDP", "7100/TCP"}},
	} {
		var np networkingv1.NetworkPolicy
		objs.get(t, "NetworkPolicy", c.name, &np)
		if got := ingressPorts(np); !slices.Equal(got, c.ingress) {
			t.Errorf("%s ingress ports %v, want %v", c.name, got, c.ingress)
		}
		if got := egressPorts(np); !slices.Equal(got, c.egress) {
			t.Errorf("%s egress ports %v, want %v", c.name, got, c.egress)
		}
		if len(np.Spec.PolicyTypes) != 2 {
			t.Errorf("%s: policy types %v", c.name, np.Spec.PolicyTypes)
		}
	}
	// The route port is open to the hub's nodes only; the client port to
	// the gateway, the operator's job, the adapters and the ministries.
	var np networkingv1.NetworkPolicy
	objs.get(t, "NetworkPolicy", "jisr-nats", &np)
	for _, r := range np.Spec.Ingress {
		switch ports(r.Ports)[0] {
		case "6222/TCP":
			if len(r.From) != 1 || r.From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "nats" || r.From[0].NamespaceSelector != nil {
				t.Errorf("routes open to %+v", r.From)
			}
		case "4222/TCP":
			if len(r.From) != 5 {
				t.Errorf("client port open to %d peers, want gateway, consent, operator, adapters, ministries", len(r.From))
			}
		}
	}
	// The cnss adapter's consumer port is open only to the values' peer.
	objs.get(t, "NetworkPolicy", "jisr-adapter-cnss", &np)
	for _, r := range np.Spec.Ingress {
		if ports(r.Ports)[0] == "7000/TCP" && (len(r.From) != 1 || r.From[0].PodSelector.MatchLabels["app"] != "cnss-portal") {
			t.Errorf("cnss adapter gRPC open to %+v", r.From)
		}
	}
}

// A ministry's own release: its adapter only, no hub, its NATS egress to the
// hub's namespace.
func TestTemplateMinistryRelease(t *testing.T) {
	vals := values(t, "../jisr/values.yaml")
	vals["hub"] = map[string]any{"enabled": false}
	vals["adapters"] = []any{map[string]any{"member": "health", "backend": "health-backend:7100", "natsURL": "tls://nats.hub.example:4222"}}
	objs := render(t, vals)
	for _, kind := range []string{"StatefulSet", "Job", "PodDisruptionBudget"} {
		if len(objs[kind]) != 0 {
			t.Errorf("a ministry's release renders %s %v", kind, keys(objs[kind]))
		}
	}
	var d appsv1.Deployment
	objs.get(t, "Deployment", "jisr-adapter-health", &d)
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--nats=tls://nats.hub.example:4222") {
		t.Errorf("args %v", d.Spec.Template.Spec.Containers[0].Args)
	}
	checkPod(t, "adapter-health", d.Spec.Template.Spec)
	var np networkingv1.NetworkPolicy
	objs.get(t, "NetworkPolicy", "jisr-adapter-health", &np)
	for _, r := range np.Spec.Egress {
		if ports(r.Ports)[0] == "4222/TCP" && (len(r.To) != 1 || r.To[0].NamespaceSelector == nil || r.To[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "jisr") {
			t.Errorf("NATS egress to %+v", r.To)
		}
	}
	if len(np.Spec.Ingress) != 1 || ports(np.Spec.Ingress[0].Ports)[0] != "9090/TCP" {
		t.Errorf("an adapter without listed clients accepts gRPC from: %+v", np.Spec.Ingress)
	}
}

// What must not render: no federation file, a hub of fewer than three
// nodes, a single gateway, an adapter without a backend.
func TestTemplateRefusals(t *testing.T) {
	for _, c := range []struct {
		name, reason string
		mutate       func(map[string]any)
	}{
		{"no federation", "federation is required", func(v map[string]any) { v["federation"] = "" }},
		{"no governance key", "governancePub is required", func(v map[string]any) { v["governancePub"] = "" }},
		{"two NATS nodes", "at least 3 nodes", func(v map[string]any) { v["nats"].(map[string]any)["replicas"] = 2 }},
		{"one gateway", "gateway.replicas", func(v map[string]any) { v["gateway"].(map[string]any)["replicas"] = 1 }},
		{"no consent key", "keys.consentKeyFiles", func(v map[string]any) { v["keys"].(map[string]any)["consentKeyFiles"] = []any{} }},
		{"adapter without backend", "backend is required", func(v map[string]any) { v["adapters"] = []any{map[string]any{"member": "cnss"}} }},
	} {
		vals := hubValues(t)
		c.mutate(vals)
		ch, err := loader.Load(chartDir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newInstall(t).Run(ch, vals); err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: rendered, or refused for another reason: %v", c.name, err)
		}
	}
	// The same values with nothing removed render.
	render(t, hubValues(t))
}

// hubValues are the chart's default values with a consent key named.
func hubValues(t *testing.T) map[string]any {
	t.Helper()
	vals := values(t, "../jisr/values.yaml")
	vals["keys"].(map[string]any)["consentKeyFiles"] = []any{"1764000000-k1.key"}
	return vals
}
