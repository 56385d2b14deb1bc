package manifests_test

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The node configuration, as far as these checks need it

// nodeConfig is the part of ssemesh's node configuration the invariants
// read. Decoding is lenient here: the real node checks the whole file
// (TestNodeConfigCheck).
type nodeConfig struct {
	Listen         string   `json:"listen"`
	NodeID         string   `json:"node_id"`
	Drain          string   `json:"drain"`
	TrustedProxies []string `json:"trusted_proxies"`
	Backends       []struct {
		Name        string   `json:"name"`
		URI         string   `json:"uri"`
		Mount       string   `json:"mount"`
		Prefix      bool     `json:"prefix"`
		QueryParams []string `json:"query_params"`
	} `json:"backends"`
	Admin struct {
		Listen          string `json:"listen"`
		Token           string `json:"token"`
		InsecureNoToken bool   `json:"insecure_no_token"`
	} `json:"admin"`
	Limits struct {
		MaxClients int `json:"max_clients"`
		MaxStreams int `json:"max_streams"`
	} `json:"limits"`
	Relay struct {
		RingBytes int64 `json:"ring_bytes"`
	} `json:"relay"`
	Mesh struct {
		Tier          int      `json:"tier"`
		Advertise     string   `json:"advertise"`
		Handoff       string   `json:"handoff"`
		Secret        string   `json:"secret"`
		AcceptSecrets []string `json:"accept_secrets"`
		Gossip        struct {
			Bind          string   `json:"bind"`
			Advertise     string   `json:"advertise"`
			Seeds         []string `json:"seeds"`
			Key           string   `json:"key"`
			AcceptKeys    []string `json:"accept_keys"`
			InsecureNoKey bool     `json:"insecure_no_key"`
		} `json:"gossip"`
		Consul struct {
			Address string `json:"address"`
		} `json:"consul"`
	} `json:"mesh"`
}

// defaultNodeConfig holds ssemesh's defaults for the keys above
// (node.DefaultConfig, relay.DefaultConfig).
func defaultNodeConfig() nodeConfig {
	var c nodeConfig
	c.Listen = "127.0.0.1:8080"
	c.Drain = "10s"
	c.Admin.Listen = "127.0.0.1:9090"
	c.Limits.MaxClients = 19000
	c.Limits.MaxStreams = 10000
	c.Relay.RingBytes = 64 << 20
	c.Mesh.Handoff = "10s"
	return c
}

func parseNodeConfig(raw string) (nodeConfig, error) {
	c := defaultNodeConfig()
	err := yaml.Unmarshal([]byte(raw), &c)
	return c, err
}

// applyFlags overrides the keys that `ssemesh run` flags set, as
// cmd/ssemesh does.
func (c *nodeConfig) applyFlags(args []string) error {
	var seeds []string
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") {
			return fmt.Errorf("unexpected argument %q", args[i])
		}
		if name == "check" {
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return fmt.Errorf("flag %s has no value", args[i])
			}
			i++
			val = args[i]
		}
		if val == "" {
			continue // an empty flag counts as not given
		}
		switch name {
		case "config", "log-level", "log-format", "backend", "consul":
		case "listen":
			c.Listen = val
		case "admin":
			c.Admin.Listen = val
		case "node-id":
			c.NodeID = val
		case "tier":
			n, err := strconv.Atoi(val)
			if err != nil {
				return fmt.Errorf("--tier %q: %w", val, err)
			}
			c.Mesh.Tier = n
		case "gossip":
			c.Mesh.Gossip.Bind = val
		case "advertise":
			c.Mesh.Advertise = val
		case "seed":
			seeds = append(seeds, val)
		case "max-clients":
			n, err := strconv.Atoi(val)
			if err != nil {
				return fmt.Errorf("--max-clients %q: %w", val, err)
			}
			c.Limits.MaxClients = n
		default:
			return fmt.Errorf("unknown flag %s", args[i])
		}
	}
	if len(seeds) > 0 {
		c.Mesh.Gossip.Seeds = seeds
	}
	return nil
}

func (c nodeConfig) duration(key, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	return d, nil
}

// maxShutdown is the longest graceful stop the node allows itself from
// SIGTERM (node/node.go Run).
func (c nodeConfig) maxShutdown() (time.Duration, error) {
	drain, err := c.duration("drain", c.Drain)
	if err != nil {
		return 0, err
	}
	total := drain + shutdownMargin
	if c.Mesh.Gossip.Bind != "" || c.Mesh.Consul.Address != "" {
		handoff, err := c.duration("mesh.handoff", c.Mesh.Handoff)
		if err != nil {
			return 0, err
		}
		total += meshLeave + handoff
	}
	return total, nil
}

// secretLookingRE matches the names of variables that must come from a
// Secret.
var secretLookingRE = regexp.MustCompile(`(?i)pass|secret|token|key|cred`)

var envRefRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// envRefs lists the ${VAR} references of a configuration file, outside
// comment lines (which the node does not interpolate).
func envRefs(raw string) []string {
	var out []string
	for _, line := range strings.Split(raw, "\n") {
		if strings.HasPrefix(strings.TrimLeft(line, " \t"), "#") {
			continue
		}
		for _, m := range envRefRE.FindAllStringSubmatch(line, -1) {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Workloads

// workload is a pod template with what the checks derive from it.
type workload struct {
	kind, name string
	labels     map[string]string // the pod template's
	selector   *metav1.LabelSelector
	pod        corev1.PodSpec
	container  corev1.Container // the ssemesh container
	configMap  *corev1.ConfigMap
	configKey  string
	configPath string // --config as given
	rawConfig  string
	cfg        nodeConfig // file plus flags
	flags      []string   // command[1:] + args, $(VAR) expanded for a test pod
}

func podTemplate(s *manifestSet, kind, name string) (*corev1.PodTemplateSpec, *metav1.LabelSelector, error) {
	switch kind {
	case "StatefulSet":
		if o := s.statefulSets[name]; o != nil {
			return &o.Spec.Template, o.Spec.Selector, nil
		}
	case "Deployment":
		if o := s.deployments[name]; o != nil {
			return &o.Spec.Template, o.Spec.Selector, nil
		}
	}
	return nil, nil, fmt.Errorf("no %s %q", kind, name)
}

// testPodEnv is what the downward API gives a test pod of the workload.
func testPodEnv(kind, name string) map[string]string {
	pod := name + "-0"
	if kind == "Deployment" {
		pod = name + "-6d9f7c8b54-x7q2m"
	}
	return map[string]string{
		"metadata.name":      pod,
		"metadata.namespace": "ssemesh-test",
		"status.podIP":       "10.244.3.17",
		"spec.nodeName":      "node-a",
	}
}

func loadWorkload(t *testing.T, s *manifestSet, kind, name string) *workload {
	t.Helper()
	tpl, sel, err := podTemplate(s, kind, name)
	if err != nil {
		t.Fatal(err)
	}
	w := &workload{kind: kind, name: name, labels: tpl.Labels, selector: sel, pod: tpl.Spec}
	i := slices.IndexFunc(tpl.Spec.Containers, func(c corev1.Container) bool { return c.Name == containerName })
	if i < 0 {
		t.Fatalf("%s %s: no container %q", kind, name, containerName)
	}
	w.container = tpl.Spec.Containers[i]
	c := w.container
	if len(c.Command) == 0 || c.Command[0] != imageBinary {
		t.Fatalf("%s %s: command %q does not start with the image's binary %s", kind, name, c.Command, imageBinary)
	}
	env, err := containerEnv(c, testPodEnv(kind, name), testSecrets(s), s.configMaps)
	if err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	args := append(slices.Clone(c.Command[1:]), c.Args...)
	for i := range args {
		args[i] = expandK8s(args[i], env)
	}
	if len(args) == 0 || args[0] != "run" {
		t.Fatalf("%s %s: arguments %q: want ssemesh run", kind, name, args)
	}
	w.flags = args[1:]
	for i, a := range w.flags {
		if a == "--config" || a == "-config" {
			if i+1 < len(w.flags) {
				w.configPath = w.flags[i+1]
			}
		} else if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "config="); ok {
			w.configPath = v
		}
	}
	if w.configPath == "" {
		t.Fatalf("%s %s: no --config", kind, name)
	}
	w.configMap, w.configKey, err = configMapFor(w.pod, c, w.configPath, s.configMaps)
	if err != nil {
		t.Fatalf("%s %s: --config %s: %v", kind, name, w.configPath, err)
	}
	w.rawConfig = w.configMap.Data[w.configKey]
	if w.cfg, err = parseNodeConfig(w.rawConfig); err != nil {
		t.Fatalf("%s %s: ConfigMap %s key %s: %v", kind, name, w.configMap.Name, w.configKey, err)
	}
	if err := w.cfg.applyFlags(w.flags); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return w
}

// configMapFor finds the ConfigMap key mounted at path in container c.
func configMapFor(pod corev1.PodSpec, c corev1.Container, path string, cms map[string]*corev1.ConfigMap) (*corev1.ConfigMap, string, error) {
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if vm.SubPath != "" {
			return nil, "", errors.New("mounted with subPath: the file would not follow ConfigMap changes")
		}
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			return nil, "", fmt.Errorf("volume %q is not defined", vm.Name)
		}
		v := pod.Volumes[i]
		if v.ConfigMap == nil {
			return nil, "", fmt.Errorf("volume %q is not a ConfigMap", vm.Name)
		}
		key := rel
		for _, it := range v.ConfigMap.Items {
			if it.Path == rel {
				key = it.Key
			}
		}
		cm := cms[v.ConfigMap.Name]
		if cm == nil {
			return nil, "", fmt.Errorf("ConfigMap %q is not in the manifests", v.ConfigMap.Name)
		}
		if _, ok := cm.Data[key]; !ok {
			return nil, "", fmt.Errorf("ConfigMap %q has no key %q", cm.Name, key)
		}
		return cm, key, nil
	}
	return nil, "", errors.New("no volume is mounted there")
}

var k8sRefRE = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandK8s expands $(VAR) as the kubelet does in command, args and env
// values: a reference to an undefined variable is kept as written.
func expandK8s(s string, env map[string]string) string {
	return k8sRefRE.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// envSource records where a container variable comes from.
type envSource int

const (
	fromValue envSource = iota
	fromField
	fromSecret
	fromConfigMap
	fromResource
)

func envSources(c corev1.Container, cms map[string]*corev1.ConfigMap) map[string]envSource {
	src := map[string]envSource{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.SecretRef != nil:
			// The keys are those of the Secret, known only at run time; the
			// checks below look at explicit variables.
		case ef.ConfigMapRef != nil:
			if cm := cms[ef.ConfigMapRef.Name]; cm != nil {
				for k := range cm.Data {
					src[ef.Prefix+k] = fromConfigMap
				}
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			src[e.Name] = fromValue
		case e.ValueFrom.SecretKeyRef != nil:
			src[e.Name] = fromSecret
		case e.ValueFrom.ConfigMapKeyRef != nil:
			src[e.Name] = fromConfigMap
		case e.ValueFrom.FieldRef != nil:
			src[e.Name] = fromField
		case e.ValueFrom.ResourceFieldRef != nil:
			src[e.Name] = fromResource
		}
	}
	return src
}

// containerEnv is the environment the kubelet would give container c in a
// test pod: field references from podFields, secrets from secrets (Secret
// name -> key -> value).
func containerEnv(c corev1.Container, podFields map[string]string, secrets map[string]map[string]string, cms map[string]*corev1.ConfigMap) (map[string]string, error) {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.SecretRef != nil:
			sec, ok := secrets[ef.SecretRef.Name]
			if !ok {
				return nil, fmt.Errorf("envFrom: Secret %q is not in %s", ef.SecretRef.Name, exampleSecrets)
			}
			for k, v := range sec {
				env[ef.Prefix+k] = v
			}
		case ef.ConfigMapRef != nil:
			cm := cms[ef.ConfigMapRef.Name]
			if cm == nil {
				return nil, fmt.Errorf("envFrom: ConfigMap %q is not in the manifests", ef.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch vf := e.ValueFrom; {
		case vf == nil:
			env[e.Name] = expandK8s(e.Value, env)
		case vf.FieldRef != nil:
			v, ok := podFields[vf.FieldRef.FieldPath]
			if !ok {
				return nil, fmt.Errorf("env %s: fieldRef %s is not simulated by the test", e.Name, vf.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case vf.SecretKeyRef != nil:
			v, ok := secrets[vf.SecretKeyRef.Name][vf.SecretKeyRef.Key]
			if !ok {
				return nil, fmt.Errorf("env %s: Secret %q key %q is not in %s", e.Name, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key, exampleSecrets)
			}
			env[e.Name] = v
		case vf.ConfigMapKeyRef != nil:
			cm := cms[vf.ConfigMapKeyRef.Name]
			if cm == nil {
				return nil, fmt.Errorf("env %s: ConfigMap %q is not in the manifests", e.Name, vf.ConfigMapKeyRef.Name)
			}
			v, ok := cm.Data[vf.ConfigMapKeyRef.Key]
			if !ok {
				return nil, fmt.Errorf("env %s: ConfigMap %q has no key %q", e.Name, cm.Name, vf.ConfigMapKeyRef.Key)
			}
			env[e.Name] = v
		case vf.ResourceFieldRef != nil:
			env[e.Name] = "1"
		default:
			return nil, fmt.Errorf("env %s: empty valueFrom", e.Name)
		}
	}
	return env, nil
}

// testSecrets gives every key of the example Secrets a fresh, valid value:
// random base64 of 32 bytes, which is a valid mesh secret (44 characters),
// gossip key (a 32-byte AES key) and token alike.
var testSecrets = func() func(*manifestSet) map[string]map[string]string {
	var once sync.Once
	var out map[string]map[string]string
	return func(s *manifestSet) map[string]map[string]string {
		once.Do(func() {
			out = map[string]map[string]string{}
			for name, sec := range s.secrets {
				out[name] = map[string]string{}
				for k := range secretKeys(sec) {
					b := make([]byte, 32)
					if _, err := rand.Read(b); err != nil {
						panic(err)
					}
					out[name][k] = base64.StdEncoding.EncodeToString(b)
				}
			}
		})
		return out
	}
}()

// secretKeys are a Secret's keys with their values, stringData over data.
func secretKeys(sec *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range sec.Data {
		out[k] = string(v)
	}
	for k, v := range sec.StringData {
		out[k] = v
	}
	return out
}

func workloads(t *testing.T) []*workload {
	s := manifests(t)
	return []*workload{
		loadWorkload(t, s, "StatefulSet", rootName),
		loadWorkload(t, s, "Deployment", leafName),
	}
}

func portByNameOrNumber(c corev1.Container, p intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, cp := range c.Ports {
		cpProto := cp.Protocol
		if cpProto == "" {
			cpProto = corev1.ProtocolTCP
		}
		if cpProto != proto {
			continue
		}
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func portOf(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(p, 10, 32)
	return int32(n), err
}

func namedPort(c corev1.Container, name string) (corev1.ContainerPort, bool) {
	i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name })
	if i < 0 {
		return corev1.ContainerPort{}, false
	}
	return c.Ports[i], true
}
