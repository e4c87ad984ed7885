package kubernetes

import (
	"cmp"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"
)

// The manifests are checked offline against the Kubernetes API's own Go types (k8s.io/api),
// decoded strictly: a field the API does not have (a typo such as readOnlyRootFileSystem,
// or a field at the wrong level), a duplicate key or a value of the wrong type fails here
// instead of being dropped by the API server or refused at apply time. No cluster needed.
//
// Custom resources have no types in k8s.io/api: for the cert-manager Issuer and
// Certificate and the Prometheus operator's PodMonitor only the apiVersion/kind pair is
// checked here (manifests_test.go checks the fields its tests rely on); kustomization.yaml
// is decoded strictly into the subset of kustomize's fields this example uses.

// kustomization is the part of kustomize's Kustomization this example uses; a field it
// does not know is an error, so using another means teaching this test.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
		Digest  string `json:"digest"`
	} `json:"images"`
}

// apiTypes gives, for each apiVersion/kind a manifest here may have, a new value of its
// Go type; nil for custom resources, which have none.
var apiTypes = map[string]func() any{
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/Namespace":                       func() any { return &corev1.Namespace{} },
	"policy/v1/PodDisruptionBudget":      func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return &kustomization{} },
	"cert-manager.io/v1/Issuer":                     nil,
	"cert-manager.io/v1/Certificate":                nil,
	"monitoring.coreos.com/v1/PodMonitor":           nil,
}

// typedDoc is one YAML document of a manifest file, decoded into its API type.
type typedDoc struct {
	file      string // slash-separated, relative to this directory
	kind      string
	name      string
	namespace string
	obj       any // nil for a custom resource
}

// decodeStrict decodes one YAML document into the API type its apiVersion and kind name.
func decodeStrict(doc []byte) (typedDoc, error) {
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := sigsyaml.Unmarshal(doc, &head); err != nil {
		return typedDoc{}, err
	}
	newObj, ok := apiTypes[head.APIVersion+"/"+head.Kind]
	if !ok {
		return typedDoc{}, fmt.Errorf("apiVersion %q kind %q is not one this test knows: teach apiTypes, or leave the manifest out", head.APIVersion, head.Kind)
	}
	d := typedDoc{kind: head.Kind, name: cmp.Or(head.Metadata.Name, "-"), namespace: head.Metadata.Namespace}
	if newObj == nil {
		return d, nil
	}
	d.obj = newObj()
	if err := sigsyaml.UnmarshalStrict(doc, d.obj); err != nil {
		return typedDoc{}, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	return d, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadTyped decodes every manifest file in this directory and below.
func loadTyped(t *testing.T) []typedDoc {
	t.Helper()
	var docs []typedDoc
	err := walkManifests(func(file string, data []byte) error {
		for _, doc := range docSeparator.Split(string(data), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			td, err := decodeStrict([]byte(doc))
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			td.file = filepath.ToSlash(file)
			docs = append(docs, td)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func typed[T any](docs []typedDoc) []T {
	var out []T
	for _, d := range docs {
		if v, ok := d.obj.(*T); ok {
			out = append(out, *v)
		}
	}
	return out
}

// TestManifestSchema decodes every manifest strictly into its Kubernetes API type.
func TestManifestSchema(t *testing.T) {
	docs := loadTyped(t)
	var typedN, custom []string
	for _, d := range docs {
		if d.obj == nil {
			custom = append(custom, d.kind+" "+d.name)
		} else {
			typedN = append(typedN, d.kind+" "+d.name)
		}
	}
	t.Logf("decoded strictly into their API types: %s", strings.Join(typedN, ", "))
	t.Logf("custom resources, apiVersion/kind checked only: %s", strings.Join(custom, ", "))
	for _, want := range []string{"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Namespace", "ConfigMap", "Secret", "Kustomization"} {
		if !slices.ContainsFunc(docs, func(d typedDoc) bool { return d.kind == want && d.obj != nil }) {
			t.Errorf("no %s was decoded: the example should have one", want)
		}
	}
}

// TestManifestSchemaRefuses checks that the strict decoding refuses what a lenient one
// would drop.
func TestManifestSchemaRefuses(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  externalTraficPolicy: Local\n", `unknown field "externalTraficPolicy"`},
		{"field at the wrong level", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          runAsNonRoot: true\n", `unknown field "runAsNonRoot"`},
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  k: x\n  k: y\n", `already set in map`},
		{"wrong type", "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: a}\nspec:\n  minAvailable: [1]\n", "cannot unmarshal"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n", `kind "Pod" is not one this test knows`},
		{"kustomization field", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: x-\n", `unknown field "namePrefix"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decodeStrict = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestKustomizations checks that the kustomizations compose as `kubectl apply -k` would
// apply them: every resource they list exists, every manifest here is listed by exactly
// one of them, they all put the objects in one namespace, which is the Namespace object's
// name and the one the Certificate's in-cluster DNS names use, and no manifest overrides it.
func TestKustomizations(t *testing.T) {
	docs := loadTyped(t)
	listed := map[string]string{} // manifest file -> the kustomization listing it
	var namespaces []string
	var images []string // every container image in the Deployments
	for _, d := range typed[appsv1.Deployment](docs) {
		for _, c := range d.Spec.Template.Spec.Containers {
			images = append(images, c.Image)
		}
	}
	for _, d := range docs {
		k, ok := d.obj.(*kustomization)
		if !ok {
			continue
		}
		dir := path.Dir(d.file)
		if k.Namespace == "" {
			t.Errorf("%s sets no namespace: its objects would land in kubectl's current one", d.file)
		}
		namespaces = append(namespaces, k.Namespace)
		if len(k.Resources) == 0 {
			t.Errorf("%s lists no resources", d.file)
		}
		for _, r := range k.Resources {
			file := path.Join(dir, r)
			if info, err := os.Stat(filepath.FromSlash(file)); err != nil || info.IsDir() {
				t.Errorf("%s lists %s, which is no file here (%v)", d.file, r, err)
				continue
			}
			if prev, dup := listed[file]; dup {
				t.Errorf("%s is listed by both %s and %s: applied twice", file, prev, d.file)
			}
			listed[file] = d.file
		}
		for _, im := range k.Images {
			if !slices.ContainsFunc(images, func(i string) bool { return imageName(i) == im.Name }) {
				t.Errorf("%s: images entry %q matches no container image %q: it would change nothing", d.file, im.Name, images)
			}
			checkTag(t, d.file+" images "+im.Name, im.NewTag, im.Digest)
		}
	}
	for _, d := range docs {
		if d.kind == "Kustomization" {
			continue
		}
		if _, ok := listed[d.file]; !ok {
			t.Errorf("%s (%s %s) is in no kustomization.yaml: kubectl apply -k would leave it out", d.file, d.kind, d.name)
		}
	}
	if len(namespaces) == 0 {
		t.Fatal("no kustomization.yaml here")
	}
	ns := namespaces[0]
	for _, n := range namespaces {
		if n != ns {
			t.Errorf("the kustomizations use namespaces %q: the Secret, the PodMonitor and the pod must share one", namespaces)
			break
		}
	}
	var namespaceObjects int
	for _, d := range docs {
		if d.namespace != "" && d.namespace != ns {
			t.Errorf("%s: %s %s sets namespace %q; the kustomization sets %q", d.file, d.kind, d.name, d.namespace, ns)
		}
		if d.kind == "Namespace" {
			namespaceObjects++
			if d.name != ns {
				t.Errorf("%s: Namespace %q, but the kustomizations use %q", d.file, d.name, ns)
			}
		}
	}
	if namespaceObjects != 1 {
		t.Errorf("%d Namespace objects; want one, so kubectl apply -k creates the namespace", namespaceObjects)
	}
	m := loadManifests(t)
	for _, c := range m.certificates {
		for _, name := range c.Spec.DNSNames {
			if i := strings.Index(name, ".svc"); i >= 0 && !strings.HasSuffix(name[:i], "."+ns) {
				t.Errorf("%s: DNS name %s is not in namespace %s, where the kustomizations put the Service", c.file, name, ns)
			}
		}
	}
}

// imageName is an image reference without its tag and digest.
func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

var (
	exactTag = regexp.MustCompile(`^v?\d+\.\d+\.\d+([-.][0-9A-Za-z.-]+)?$`)
	digest   = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// checkTag insists on an exact version tag and, when a digest is given, a well-formed one.
func checkTag(t *testing.T, what, tag, dgst string) {
	t.Helper()
	if !exactTag.MatchString(tag) {
		t.Errorf("%s: tag %q is not an exact version (such as 2.0.22 or v0.1.0): a moving tag (latest, 2) changes under a rollout", what, tag)
	}
	if dgst != "" && !digest.MatchString(dgst) {
		t.Errorf("%s: digest %q is not sha256:<64 hex digits>", what, dgst)
	}
}

// TestImagesPinned checks that every container image names an exact version.
func TestImagesPinned(t *testing.T) {
	for _, d := range typed[appsv1.Deployment](loadTyped(t)) {
		for _, c := range slices.Concat(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers) {
			ref, dgst, _ := strings.Cut(c.Image, "@")
			name := imageName(ref)
			tag := strings.TrimPrefix(strings.TrimPrefix(ref, name), ":")
			checkTag(t, "Deployment "+d.Name+" container "+c.Name+" image "+c.Image, tag, dgst)
			if c.ImagePullPolicy == corev1.PullAlways {
				t.Errorf("container %s: imagePullPolicy Always with a pinned image only adds a registry round trip per start", c.Name)
			}
		}
	}
}

// TestSecretVolumes checks that every Secret volume is mounted 0400 and that mqtls can
// still read it: the pod's fsGroup must be mqtls's group, since the kubelet then makes the
// files root:fsGroup and adds group read; without it they are root's alone.
func TestSecretVolumes(t *testing.T) {
	found := 0
	for _, d := range typed[appsv1.Deployment](loadTyped(t)) {
		spec := d.Spec.Template.Spec
		for _, v := range spec.Volumes {
			if v.Secret == nil {
				continue
			}
			found++
			if m := v.Secret.DefaultMode; m == nil || *m != 0o400 {
				t.Errorf("Deployment %s: Secret volume %s: defaultMode %s, want 0400 (owner read only)", d.Name, v.Name, octal(m))
			}
			for _, it := range v.Secret.Items {
				if it.Mode != nil && *it.Mode&0o077 != 0 {
					t.Errorf("Deployment %s: Secret volume %s: item %s mode %#o lets group or others read it", d.Name, v.Name, it.Key, *it.Mode)
				}
			}
			for _, c := range spec.Containers {
				if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name }) {
					continue
				}
				if !m0400Readable(spec, c) {
					t.Errorf("Deployment %s: container %s mounts Secret volume %s (0400, root's) but runs as neither root nor in the pod's fsGroup %v: it cannot read the files",
						d.Name, c.Name, v.Name, deref(spec.SecurityContext.FSGroup))
				}
			}
		}
	}
	if found == 0 {
		t.Error("no Deployment here mounts a Secret volume")
	}
}

// m0400Readable tells whether container c can read a 0400 Secret volume: as root, or
// through the pod's fsGroup, which the kubelet gives the files (adding group read) and
// every container of the pod as a supplementary group.
func m0400Readable(spec corev1.PodSpec, c corev1.Container) bool {
	psc := spec.SecurityContext
	if psc != nil && psc.FSGroup != nil {
		return true
	}
	var uid *int64
	if psc != nil {
		uid = psc.RunAsUser
	}
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		uid = c.SecurityContext.RunAsUser
	}
	return uid != nil && *uid == 0
}

// checkNetworkPolicy checks the NetworkPolicies that select the pod: the device ports are
// open to every source, the admin port only to the monitoring namespace, nothing else is
// open, and, there being no egress the pod needs, egress is closed.
func checkNetworkPolicy(t *testing.T, labels map[string]string, c container, s settings) {
	_, listen := splitPort(t, "--listen", s.need(t, "listen"))
	_, dtls := splitPort(t, "--dtls-listen", s.need(t, "dtls-listen"))
	_, admin := splitPort(t, "--admin-listen", s.need(t, "admin-listen"))
	var policies []networkingv1.NetworkPolicy
	for _, np := range typed[networkingv1.NetworkPolicy](loadTyped(t)) {
		if selects(np.Spec.PodSelector.MatchLabels, labels) {
			policies = append(policies, np)
		}
	}
	if len(policies) == 0 {
		t.Fatalf("no NetworkPolicy selects the pod %v: every pod in the cluster can reach the admin port", labels)
	}
	// resolve turns a NetworkPolicy port into the container port it names.
	resolve := func(p networkingv1.NetworkPolicyPort) (int, string) {
		proto := "TCP"
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		if p.Port == nil {
			return 0, proto // every port
		}
		if p.Port.Type == intstr.String {
			cp, ok := c.port(intOrString{Str: p.Port.StrVal})
			if !ok {
				t.Errorf("a NetworkPolicy names port %q, which container %s does not declare", p.Port.StrVal, c.Name)
			}
			return cp.ContainerPort, proto
		}
		return int(p.Port.IntVal), proto
	}
	type access struct{ any, monitoring bool }
	open := map[string]*access{}
	egress := false
	for _, np := range policies {
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("NetworkPolicy %s does not govern ingress", np.Name)
		}
		egress = egress || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		if len(np.Spec.Egress) > 0 {
			t.Errorf("NetworkPolicy %s allows egress; neither container needs any", np.Name)
		}
		for _, rule := range np.Spec.Ingress {
			ports := rule.Ports
			if len(ports) == 0 {
				ports = []networkingv1.NetworkPolicyPort{{}}
			}
			for _, p := range ports {
				n, proto := resolve(p)
				key := fmt.Sprintf("%d/%s", n, proto)
				if open[key] == nil {
					open[key] = &access{}
				}
				if len(rule.From) == 0 {
					open[key].any = true
				}
				for _, peer := range rule.From {
					mon := peer.IPBlock == nil && peer.PodSelector == nil && peer.NamespaceSelector != nil &&
						len(peer.NamespaceSelector.MatchExpressions) == 0 &&
						sameLabels(peer.NamespaceSelector.MatchLabels, map[string]string{"kubernetes.io/metadata.name": "monitoring"})
					if mon {
						open[key].monitoring = true
					} else {
						open[key].any = true // a wider peer: treated as anyone here
					}
				}
			}
		}
	}
	if !egress {
		t.Error("no NetworkPolicy of the pod governs egress: the pod needs none, so close it (policyTypes: [Ingress, Egress], egress: [])")
	}
	want := map[string]access{
		fmt.Sprintf("%d/TCP", listen): {any: true},
		fmt.Sprintf("%d/UDP", dtls):   {any: true},
		fmt.Sprintf("%d/TCP", admin):  {monitoring: true},
	}
	for key, a := range open {
		w, ok := want[key]
		switch {
		case !ok:
			t.Errorf("a NetworkPolicy opens %s (0 is every port), which is neither a device port nor the admin port", key)
		case a.any && !w.any:
			t.Errorf("a NetworkPolicy opens the admin port %s to more than the monitoring namespace", key)
		}
	}
	for key, w := range want {
		a := open[key]
		if a == nil || w.any && !a.any || w.monitoring && !a.monitoring {
			t.Errorf("the NetworkPolicies do not open %s to %s", key, map[bool]string{true: "every source", false: "the monitoring namespace"}[w.any])
		}
	}
}

func octal(m *int32) string {
	if m == nil {
		return "unset (0644)"
	}
	return fmt.Sprintf("%#o", *m)
}

func sameLabels(a, b map[string]string) bool {
	return len(a) == len(b) && subset(a, b)
}
