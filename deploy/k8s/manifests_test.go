// Package manifests_test checks the Kubernetes manifests in manifests/:
// every document decodes strictly into its Kubernetes API type, the
// workloads keep the invariants ssemesh needs in a cluster (README.md), and
// the node configurations in the ConfigMaps pass the real node's checks
// (`ssemesh run --check`, with the environment each container would have).
//
// The ssemesh binary is built from the main module (../..) once per run, or
// taken from $SSEMESH_BIN when that is set.
package manifests_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	manifestDir = "manifests"
	// exampleSecrets is the Secret template: decoded and checked, but not
	// part of the kustomization, since it holds placeholders.
	exampleSecrets    = "secret.example.yaml"
	kustomizationFile = "kustomization.yaml"

	rootName       = "ssemesh-root"
	leafName       = "ssemesh-leaf"
	gossipSvcName  = "ssemesh-gossip"
	clientSvcName  = "ssemesh"
	containerName  = "ssemesh"
	imageBinary    = "/ssemesh" // where the image keeps the binary
	imageName      = "ssemesh:VERSION"
	imageUID       = 65532
	clientsMetric  = "ssemesh_clients_connected"
	shutdownMargin = 15 * time.Second // node/node.go Run: drain + 15 s ...
	meshLeave      = 5 * time.Second  // ... + 5 s in a mesh + mesh.handoff
)

// secretEnv are the variables the node takes its secrets from when the file
// leaves the keys empty (node.SecretEnv), with the key each fills.
var secretEnv = []struct{ env, key string }{
	{"SSEMESH_MESH_SECRET", "mesh.secret"},
	{"SSEMESH_GOSSIP_KEY", "mesh.gossip.key"},
	{"SSEMESH_ADMIN_TOKEN", "admin.token"},
}

// ---------------------------------------------------------------------------
// Strict decoding

// kustomization is the part of kustomize's Kustomization these manifests
// use; any other field fails the strict decoding, as an unknown field would.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// kinds maps apiVersion/kind to the Go type a document must decode into.
// A kind not listed here fails the test.
var kinds = map[string]func() any{
	"v1/ConfigMap":                                  func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                     func() any { return &corev1.Secret{} },
	"v1/Service":                                    func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                             func() any { return &corev1.ServiceAccount{} },
	"apps/v1/StatefulSet":                           func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":                            func() any { return &appsv1.Deployment{} },
	"autoscaling/v2/HorizontalPodAutoscaler":        func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":                 func() any { return &policyv1.PodDisruptionBudget{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return &kustomization{} },
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a YAML stream at "---" lines, as kubectl does.
func splitDocs(src []byte) [][]byte {
	var out [][]byte
	for _, d := range docSeparator.Split(string(src), -1) {
		out = append(out, []byte(d))
	}
	return out
}

// decodeDoc decodes one YAML document strictly: duplicate YAML keys, an
// unknown apiVersion/kind, an unknown field (compared case-sensitively, as
// the API server does) or a duplicate JSON field are errors. It returns nil,
// nil for a document with no content (comments only).
func decodeDoc(doc []byte) (any, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if string(js) == "null" {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, fmt.Errorf("reading apiVersion and kind: %w", err)
	}
	mk, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown apiVersion/kind %q/%q", tm.APIVersion, tm.Kind)
	}
	// encoding/json with DisallowUnknownFields ...
	obj := mk()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data", tm.Kind)
	}
	// ... and the API machinery's own decoder, which also matches field
	// names case-sensitively (encoding/json would take "Name" for "name").
	obj = mk()
	strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return obj, nil
}

// manifest is one decoded document.
type manifest struct {
	file string // base name in manifests/
	doc  int    // index in the file, from 0
	obj  any
}

func (m manifest) String() string { return fmt.Sprintf("%s[%d]", m.file, m.doc) }

type manifestSet struct {
	all          []manifest
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret // the example Secrets
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	pdbs         []*policyv1.PodDisruptionBudget
	kustom       *kustomization
	files        []string // every YAML file, base names, sorted
}

var loadManifests = sync.OnceValues(func() (*manifestSet, error) {
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.y*ml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no YAML file in %s", manifestDir)
	}
	s := &manifestSet{
		configMaps:   map[string]*corev1.ConfigMap{},
		secrets:      map[string]*corev1.Secret{},
		services:     map[string]*corev1.Service{},
		statefulSets: map[string]*appsv1.StatefulSet{},
		deployments:  map[string]*appsv1.Deployment{},
	}
	seen := map[string]string{}
	for _, f := range files {
		base := filepath.Base(f)
		s.files = append(s.files, base)
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for i, doc := range splitDocs(src) {
			obj, err := decodeDoc(doc)
			if err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", base, i, err)
			}
			if obj == nil {
				continue
			}
			m := manifest{file: base, doc: i, obj: obj}
			s.all = append(s.all, m)
			if o, ok := obj.(metav1.Object); ok {
				key := fmt.Sprintf("%T/%s", obj, o.GetName())
				if prev, dup := seen[key]; dup {
					return nil, fmt.Errorf("%s: %s is defined again (first in %s)", m, key, prev)
				}
				seen[key] = m.String()
			}
			switch o := obj.(type) {
			case *corev1.ConfigMap:
				s.configMaps[o.Name] = o
			case *corev1.Secret:
				if base != exampleSecrets {
					return nil, fmt.Errorf("%s: Secret %q outside %s: secrets are created by the operator, never shipped", m, o.Name, exampleSecrets)
				}
				s.secrets[o.Name] = o
			case *corev1.Service:
				s.services[o.Name] = o
			case *appsv1.StatefulSet:
				s.statefulSets[o.Name] = o
			case *appsv1.Deployment:
				s.deployments[o.Name] = o
			case *autoscalingv2.HorizontalPodAutoscaler:
				s.hpas = append(s.hpas, o)
			case *policyv1.PodDisruptionBudget:
				s.pdbs = append(s.pdbs, o)
			case *kustomization:
				if s.kustom != nil {
					return nil, fmt.Errorf("%s: a second Kustomization", m)
				}
				s.kustom = o
			}
		}
	}
	sort.Strings(s.files)
	return s, nil
})

func manifests(t *testing.T) *manifestSet {
	t.Helper()
	s, err := loadManifests()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDecodeStrict checks that the strict decoder refuses what it should,
// so that TestManifestsDecode means something.
func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"ok", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n", ""},
		{"comments only", "# nothing\n", ""},
		{"unknown kind", "apiVersion: v1\nkind: Frobnicator\nmetadata: {name: a}\n", "unknown apiVersion/kind"},
		{"unknown apiVersion", "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: a}\n", "unknown apiVersion/kind"},
		{"unknown field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndatta: {k: v}\n", "unknown field"},
		{"unknown nested field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1, targetPortt: 2}]}\n", "unknown field"},
		{"field in the wrong case", "apiVersion: v1\nkind: ConfigMap\nmetadata: {Name: a}\n", "unknown field"},
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v, k: w}\n", "already set"},
		{"wrong type", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: [None]}\n", "cannot unmarshal"},
		{"unknown kustomize field", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\npatchesStrategicMerge: []\n", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDoc([]byte(tt.doc))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("decode: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("decode accepted it, want an error with %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("decode: %v, want an error with %q", err, tt.want)
			}
		})
	}
	if got := len(splitDocs([]byte("a: 1\n---\nb: 2\n--- \nc: 3\n"))); got != 3 {
		t.Fatalf("splitDocs: %d documents, want 3", got)
	}
}

// TestManifestsDecode: every document of every YAML file decodes strictly,
// names are valid, and nothing names a namespace.
func TestManifestsDecode(t *testing.T) {
	s := manifests(t)
	if len(s.all) == 0 {
		t.Fatal("no document")
	}
	for _, m := range s.all {
		o, ok := m.obj.(metav1.Object)
		if !ok {
			continue // the Kustomization
		}
		if o.GetName() == "" {
			t.Errorf("%s: no metadata.name", m)
		}
		for _, msg := range validation.IsDNS1123Subdomain(o.GetName()) {
			t.Errorf("%s: name %q: %s", m, o.GetName(), msg)
		}
		if o.GetNamespace() != "" {
			t.Errorf("%s: metadata.namespace %q: the manifests are namespace-agnostic", m, o.GetNamespace())
		}
		for k, v := range o.GetLabels() {
			for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: label %s=%s: %s", m, k, v, msg)
			}
		}
	}
	for name := range s.services {
		for _, msg := range validation.IsDNS1035Label(name) {
			t.Errorf("Service %q: %s", name, msg)
		}
	}
}

// TestKustomization: the kustomization lists every manifest file but the
// Secret template, and only files that exist.
func TestKustomization(t *testing.T) {
	s := manifests(t)
	if s.kustom == nil {
		t.Fatalf("no %s", kustomizationFile)
	}
	if s.kustom.Namespace != "" {
		t.Errorf("kustomization sets namespace %q: leave it to the operator", s.kustom.Namespace)
	}
	var want []string
	for _, f := range s.files {
		if f != kustomizationFile && f != exampleSecrets {
			want = append(want, f)
		}
	}
	got := slices.Clone(s.kustom.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want every manifest but %s and itself: %v", got, exampleSecrets, want)
	}
	for _, img := range s.kustom.Images {
		if img.Name+":VERSION" != imageName {
			t.Errorf("kustomization image %q does not name the workloads' image %q", img.Name, imageName)
		}
	}
}
