package manifests_test

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Invariants

// TestRootsAndLeaves: roots are a StatefulSet of tier 0 with node ids from
// the pod name; leaves a Deployment of a higher tier, scaled by an HPA.
func TestRootsAndLeaves(t *testing.T) {
	s := manifests(t)
	ws := workloads(t)
	root, leaf := ws[0], ws[1]

	sts := s.statefulSets[rootName]
	if sts.Spec.ServiceName != gossipSvcName {
		t.Errorf("StatefulSet %s: serviceName %q, want the headless Service %q", rootName, sts.Spec.ServiceName, gossipSvcName)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 2 {
		t.Errorf("StatefulSet %s: want at least 2 roots, so that a stream's owner can move", rootName)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet %s: podManagementPolicy %q, want Parallel (roots need no start order)", rootName, sts.Spec.PodManagementPolicy)
	}
	if got := root.cfg.Mesh.Tier; got != 0 {
		t.Errorf("roots: mesh.tier %d, want 0", got)
	}
	if got := leaf.cfg.Mesh.Tier; got <= root.cfg.Mesh.Tier {
		t.Errorf("leaves: mesh.tier %d, want above the roots' %d", got, root.cfg.Mesh.Tier)
	}

	// Node ids: from the pod name, through the downward API.
	for _, w := range ws {
		id := w.cfg.NodeID
		m := envRefRE.FindStringSubmatch(id)
		if m == nil || m[0] != id {
			// --node-id $(POD_NAME) is expanded before applyFlags; map it back.
			env, _ := containerEnv(w.container, testPodEnv(w.kind, w.name), testSecrets(s), s.configMaps)
			if id != "" && id == env["POD_NAME"] {
				m = []string{"", "POD_NAME"}
			} else {
				t.Errorf("%s %s: node_id %q, want ${POD_NAME} (or --node-id $(POD_NAME)) from the pod name", w.kind, w.name, id)
				continue
			}
		}
		if fr := fieldRefOf(w.container, m[1]); fr != "metadata.name" {
			t.Errorf("%s %s: node_id comes from %s, whose fieldRef is %q, want metadata.name", w.kind, w.name, m[1], fr)
		}
	}

	// Every node needs every back end's mount and query_params
	// (configuration.md, section 6); only roots need its credentials.
	mounts := func(c nodeConfig) string {
		var out []string
		for _, b := range c.Backends {
			out = append(out, fmt.Sprintf("%s uri=%s mount=%s prefix=%v query_params=%v", b.Name, b.URI, b.Mount, b.Prefix, b.QueryParams))
		}
		sort.Strings(out)
		return strings.Join(out, "\n")
	}
	if r, l := mounts(root.cfg), mounts(leaf.cfg); r != l || r == "" {
		t.Errorf("roots and leaves declare different back ends (or none):\nroots:\n%s\nleaves:\n%s", r, l)
	}

	dep := s.deployments[leafName]
	if dep.Spec.Replicas != nil {
		t.Errorf("Deployment %s sets replicas %d: the HPA owns the count, and every apply would reset it", leafName, *dep.Spec.Replicas)
	}
	if st := dep.Spec.Strategy.RollingUpdate; st == nil || st.MaxUnavailable == nil || st.MaxUnavailable.IntValue() != 0 {
		t.Errorf("Deployment %s: want rollingUpdate.maxUnavailable 0, so a new leaf is up before an old one drains", leafName)
	}

	// The HPA scales the leaves on clients per pod.
	var hpa *autoscalingv2.HorizontalPodAutoscaler
	for _, h := range s.hpas {
		if r := h.Spec.ScaleTargetRef; r.Kind == "Deployment" && r.Name == leafName && r.APIVersion == "apps/v1" {
			hpa = h
		} else {
			t.Errorf("HPA %s scales %s %s (%s): no such workload expected", h.Name, r.Kind, r.Name, r.APIVersion)
		}
	}
	if hpa == nil {
		t.Fatalf("no HorizontalPodAutoscaler for Deployment %s", leafName)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Errorf("HPA %s: want minReplicas >= 2 and maxReplicas >= minReplicas", hpa.Name)
	}
	found := false
	for _, m := range hpa.Spec.Metrics {
		if m.Type != autoscalingv2.PodsMetricSourceType || m.Pods == nil || m.Pods.Metric.Name != clientsMetric {
			continue
		}
		found = true
		tg := m.Pods.Target
		if tg.Type != autoscalingv2.AverageValueMetricType || tg.AverageValue == nil {
			t.Errorf("HPA %s: %s target %q, want an AverageValue", hpa.Name, clientsMetric, tg.Type)
			continue
		}
		if v := tg.AverageValue.Value(); v <= 0 || v >= int64(leaf.cfg.Limits.MaxClients) {
			t.Errorf("HPA %s: target %d clients per leaf, want above 0 and below limits.max_clients %d", hpa.Name, v, leaf.cfg.Limits.MaxClients)
		}
	}
	if !found {
		t.Errorf("HPA %s: no Pods metric %s", hpa.Name, clientsMetric)
	}

	// A PodDisruptionBudget for each workload, and none that selects nothing.
	for _, w := range ws {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.labels)) {
			t.Errorf("%s %s: selector %v does not match its pod template's labels %v (%v)", w.kind, w.name, w.selector, w.labels, err)
		}
		n := 0
		for _, pdb := range s.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil {
				t.Errorf("PDB %s: %v", pdb.Name, err)
				continue
			}
			if !sel.Empty() && sel.Matches(labels.Set(w.labels)) {
				n++
				if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
					t.Errorf("PDB %s: neither maxUnavailable nor minAvailable", pdb.Name)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s %s: %d PodDisruptionBudgets select its pods, want 1", w.kind, w.name, n)
		}
	}
	for _, pdb := range s.pdbs {
		sel, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if !slices.ContainsFunc(ws, func(w *workload) bool { return sel != nil && !sel.Empty() && sel.Matches(labels.Set(w.labels)) }) {
			t.Errorf("PDB %s selects no workload", pdb.Name)
		}
	}
}

func fieldRefOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

// TestPodInvariants: the checks every ssemesh pod must pass, per workload.
func TestPodInvariants(t *testing.T) {
	s := manifests(t)
	for _, w := range workloads(t) {
		t.Run(w.name, func(t *testing.T) {
			c := w.container
			cfg := w.cfg

			if c.Image != imageName {
				t.Errorf("image %q, want %q (set the tag with kustomize)", c.Image, imageName)
			}

			// Ports: the container's ports are the configured listeners'.
			ports := []struct {
				name  string
				key   string
				addr  string
				proto corev1.Protocol
			}{
				{"http", "listen", cfg.Listen, corev1.ProtocolTCP},
				{"admin", "admin.listen", cfg.Admin.Listen, corev1.ProtocolTCP},
				{"gossip-tcp", "mesh.gossip.bind", cfg.Mesh.Gossip.Bind, corev1.ProtocolTCP},
				{"gossip-udp", "mesh.gossip.bind", cfg.Mesh.Gossip.Bind, corev1.ProtocolUDP},
			}
			for _, p := range ports {
				want, err := portOf(p.addr)
				if err != nil {
					t.Errorf("%s %q: %v", p.key, p.addr, err)
					continue
				}
				cp, ok := namedPort(c, p.name)
				if !ok {
					t.Errorf("no container port %q (%s)", p.name, p.key)
					continue
				}
				proto := cp.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				if cp.ContainerPort != want || proto != p.proto {
					t.Errorf("container port %s is %d/%s, want %d/%s from %s %q", p.name, cp.ContainerPort, proto, want, p.proto, p.key, p.addr)
				}
				if host, _, _ := net.SplitHostPort(p.addr); host != "0.0.0.0" && host != "" {
					t.Errorf("%s %q: bind every interface of the pod", p.key, p.addr)
				}
			}
			for _, cp := range c.Ports {
				for _, msg := range validation.IsValidPortName(cp.Name) {
					t.Errorf("container port name %q: %s", cp.Name, msg)
				}
			}

			// Probes: readiness on /readyz, liveness on /healthz, both on the
			// admin listener; every probe's port exists.
			probes := []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{
				{"readinessProbe", c.ReadinessProbe, "/readyz"},
				{"livenessProbe", c.LivenessProbe, "/healthz"},
			}
			for _, p := range probes {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s: want an httpGet probe on %s", p.name, p.path)
					continue
				}
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s: path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
				}
				cp, ok := portByNameOrNumber(c, p.probe.HTTPGet.Port, corev1.ProtocolTCP)
				if !ok {
					t.Errorf("%s: port %s is not a TCP port of the container", p.name, p.probe.HTTPGet.Port.String())
					continue
				}
				if admin, _ := portOf(cfg.Admin.Listen); cp.ContainerPort != admin {
					t.Errorf("%s: port %d, want the admin listener's %d (%s)", p.name, cp.ContainerPort, admin, cfg.Admin.Listen)
				}
				if p.probe.HTTPGet.Scheme == corev1.URISchemeHTTPS {
					t.Errorf("%s: HTTPS, but the admin listener has no admin.tls here", p.name)
				}
			}
			for _, cc := range append(slices.Clone(w.pod.InitContainers), w.pod.Containers...) {
				for _, p := range []*corev1.Probe{cc.ReadinessProbe, cc.LivenessProbe, cc.StartupProbe} {
					if p == nil {
						continue
					}
					var port *intstr.IntOrString
					switch {
					case p.HTTPGet != nil:
						port = &p.HTTPGet.Port
					case p.TCPSocket != nil:
						port = &p.TCPSocket.Port
					}
					if port != nil {
						if _, ok := portByNameOrNumber(cc, *port, corev1.ProtocolTCP); !ok {
							t.Errorf("container %s: a probe uses port %s, which the container does not declare", cc.Name, port.String())
						}
					}
				}
			}

			// The admin listener is off loopback, so it needs a token, which
			// must come from the Secret (checked below).
			if host, _, _ := net.SplitHostPort(cfg.Admin.Listen); host == "127.0.0.1" || host == "localhost" {
				t.Errorf("admin.listen %q: the kubelet's probes cannot reach loopback", cfg.Admin.Listen)
			}
			if cfg.Admin.InsecureNoToken {
				t.Errorf("admin.insecure_no_token is set")
			}
			if cfg.Mesh.Gossip.InsecureNoKey {
				t.Errorf("mesh.gossip.insecure_no_key is set")
			}

			// Shutdown: preStop, then SIGTERM; the node then needs up to
			// drain + 15 s + 5 s + mesh.handoff.
			var preStop time.Duration
			switch lc := c.Lifecycle; {
			case lc == nil || lc.PreStop == nil:
				t.Errorf("no preStop hook")
			case lc.PreStop.Sleep != nil:
				preStop = time.Duration(lc.PreStop.Sleep.Seconds) * time.Second
				if preStop <= 0 {
					t.Errorf("preStop sleeps %v: let the endpoint removal propagate first", preStop)
				}
			case lc.PreStop.Exec != nil:
				t.Errorf("preStop exec %q: the image (scratch) has no shell or sleep", lc.PreStop.Exec.Command)
			default:
				t.Errorf("preStop: want a sleep action")
			}
			shutdown, err := cfg.maxShutdown()
			if err != nil {
				t.Fatalf("%v", err)
			}
			grace := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
			if g := w.pod.TerminationGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			if need := preStop + shutdown; grace <= need {
				t.Errorf("terminationGracePeriodSeconds %v, want more than preStop %v + drain %s + 15s + 5s + mesh.handoff %s = %v",
					grace, preStop, cfg.Drain, cfg.Mesh.Handoff, need)
			}

			// The addresses peers are told: the pod IP, which is also the
			// gossip address (member admission, mesh/admission.go).
			if cfg.Mesh.Gossip.Bind == "" {
				t.Fatalf("mesh.gossip.bind is empty: the node would not join the mesh")
			}
			podIPVar := ""
			if m := envRefRE.FindStringSubmatch(cfg.Mesh.Advertise); m != nil && m[0] == cfg.Mesh.Advertise {
				podIPVar = m[1]
			}
			if podIPVar == "" || fieldRefOf(c, podIPVar) != "status.podIP" {
				t.Errorf("mesh.advertise %q, want ${VAR} with VAR from the downward API's status.podIP", cfg.Mesh.Advertise)
			}
			gport, _ := portOf(cfg.Mesh.Gossip.Bind)
			if want := fmt.Sprintf("${%s}:%d", podIPVar, gport); cfg.Mesh.Gossip.Advertise != want {
				t.Errorf("mesh.gossip.advertise %q, want %q: the gossip address must be the advertised host", cfg.Mesh.Gossip.Advertise, want)
			}

			// Seeds: the headless Service by name, on its gossip port.
			svc := s.services[gossipSvcName]
			if svc == nil {
				t.Fatalf("no Service %s", gossipSvcName)
			}
			var svcPort int32
			for _, sp := range svc.Spec.Ports {
				if sp.Protocol == corev1.ProtocolTCP || sp.Protocol == "" {
					svcPort = sp.Port
				}
			}
			if want := []string{fmt.Sprintf("%s:%d", gossipSvcName, svcPort)}; !slices.Equal(cfg.Mesh.Gossip.Seeds, want) {
				t.Errorf("mesh.gossip.seeds %q, want %q (the headless Service's name, resolved in the pod's namespace)", cfg.Mesh.Gossip.Seeds, want)
			}
			if svcPort != gport {
				t.Errorf("gossip Service port %d differs from mesh.gossip.bind port %d: memberlist dials the seeds' port", svcPort, gport)
			}
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.labels)) {
				t.Errorf("the gossip Service %s does not select these pods", gossipSvcName)
			}

			// Secrets: from a Secret, never from the ConfigMap.
			src := envSources(c, s.configMaps)
			for _, se := range secretEnv {
				if src[se.env] != fromSecret {
					t.Errorf("%s (%s): want it from a secretKeyRef", se.env, se.key)
				}
			}
			for name, from := range src {
				if from != fromSecret && secretLookingRE.MatchString(name) {
					t.Errorf("env %s looks like a secret but does not come from a Secret", name)
				}
			}
			for _, ref := range envRefs(w.rawConfig) {
				if _, ok := src[ref]; !ok {
					t.Errorf("the configuration references ${%s}, which the container does not define", ref)
				}
			}
			// The secret keys are empty in the file (the node then takes the
			// SSEMESH_* variables) or a whole ${VAR} reference to a variable
			// from a Secret; never a value.
			for _, v := range []struct {
				key  string
				vals []string
			}{
				{"admin.token", []string{cfg.Admin.Token}},
				{"mesh.secret", []string{cfg.Mesh.Secret}},
				{"mesh.gossip.key", []string{cfg.Mesh.Gossip.Key}},
				{"mesh.accept_secrets", cfg.Mesh.AcceptSecrets},
				{"mesh.gossip.accept_keys", cfg.Mesh.Gossip.AcceptKeys},
			} {
				for _, val := range v.vals {
					if val == "" {
						continue
					}
					if m := envRefRE.FindStringSubmatch(val); m == nil || m[0] != val || src[m[1]] != fromSecret {
						t.Errorf("ConfigMap %s: %s is %q: secrets come from a Secret, through the environment", w.configMap.Name, v.key, val)
					}
				}
			}

			// Security context: non-root, read-only root filesystem, nothing
			// to escalate to.
			sc := c.SecurityContext
			psc := w.pod.SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			if psc == nil {
				psc = &corev1.PodSecurityContext{}
			}
			nonRoot := sc.RunAsNonRoot
			if nonRoot == nil {
				nonRoot = psc.RunAsNonRoot
			}
			if nonRoot == nil || !*nonRoot {
				t.Errorf("runAsNonRoot is not true")
			}
			uid := sc.RunAsUser
			if uid == nil {
				uid = psc.RunAsUser
			}
			if uid == nil || *uid != imageUID {
				t.Errorf("runAsUser %v, want the image's user %d", uid, imageUID)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("readOnlyRootFilesystem is not true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("allowPrivilegeEscalation is not false")
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("privileged")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("capabilities: want drop [ALL] and nothing added")
			}
			if w.pod.AutomountServiceAccountToken == nil || *w.pod.AutomountServiceAccountToken {
				t.Errorf("automountServiceAccountToken is not false: the node never calls the Kubernetes API")
			}
			if w.pod.HostNetwork {
				t.Errorf("hostNetwork: the pod IP is what the node advertises")
			}

			// Resources: requests, and a memory limit that holds the
			// replay buffers' worst case twice over.
			res := c.Resources
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := res.Requests[r]; !ok || q.IsZero() {
					t.Errorf("no %s request", r)
				}
			}
			mem, ok := res.Limits[corev1.ResourceMemory]
			if !ok || mem.IsZero() {
				t.Errorf("no memory limit")
			} else {
				if worst := int64(cfg.Limits.MaxStreams) * cfg.Relay.RingBytes; 2*worst > mem.Value() {
					t.Errorf("limits.max_streams %d x relay.ring_bytes %d = %d bytes, over half the memory limit %s", cfg.Limits.MaxStreams, cfg.Relay.RingBytes, worst, mem.String())
				}
				if gml, ok := envValue(c, "GOMEMLIMIT"); ok {
					if b, err := parseBytes(gml); err != nil || b >= mem.Value() {
						t.Errorf("GOMEMLIMIT %q: want a size below the memory limit %s (%v)", gml, mem.String(), err)
					}
				}
			}
			if w.pod.EnableServiceLinks == nil || *w.pod.EnableServiceLinks {
				t.Errorf("enableServiceLinks is not false: Service variables would crowd the environment")
			}
		})
	}
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

// parseBytes reads a GOMEMLIMIT value: a number with an optional B, KiB,
// MiB, GiB or TiB suffix.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// TestServices: the headless gossip Service and the clients' Service.
func TestServices(t *testing.T) {
	s := manifests(t)
	ws := workloads(t)

	g := s.services[gossipSvcName]
	if g == nil {
		t.Fatalf("no Service %s", gossipSvcName)
	}
	if g.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s: clusterIP %q, want None (headless: its name resolves to the pods)", g.Name, g.Spec.ClusterIP)
	}
	if !g.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: publishNotReadyAddresses is not true: seeds would not resolve while the nodes start", g.Name)
	}
	protos := map[corev1.Protocol]int32{}
	for _, p := range g.Spec.Ports {
		protos[p.Protocol] = p.Port
	}
	if protos[corev1.ProtocolTCP] != 7946 || protos[corev1.ProtocolUDP] != 7946 {
		t.Errorf("Service %s: ports %v, want 7946 over TCP and UDP", g.Name, protos)
	}
	for _, w := range ws {
		if !labels.SelectorFromSet(g.Spec.Selector).Matches(labels.Set(w.labels)) {
			t.Errorf("Service %s does not select %s %s: every node must be a seed candidate", g.Name, w.kind, w.name)
		}
	}

	c := s.services[clientSvcName]
	if c == nil {
		t.Fatalf("no Service %s", clientSvcName)
	}
	if c.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s publishes unready pods: draining leaves would get clients", c.Name)
	}
	sel := labels.SelectorFromSet(c.Spec.Selector)
	for _, w := range ws {
		wantSelected := w.name == leafName
		if sel.Matches(labels.Set(w.labels)) != wantSelected {
			t.Errorf("Service %s selects %s %s: %v, want %v (clients go to the leaves)", c.Name, w.kind, w.name, !wantSelected, wantSelected)
		}
	}
	if len(c.Spec.Ports) != 1 || c.Spec.Ports[0].Port != 8080 {
		t.Errorf("Service %s: ports %v, want 8080", c.Name, c.Spec.Ports)
	}

	// Every Service selects some pods, and every target port exists in
	// each pod it selects.
	for _, svc := range s.services {
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		n := 0
		for _, w := range ws {
			if len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(w.labels)) {
				continue
			}
			n++
			for _, sp := range svc.Spec.Ports {
				tp := sp.TargetPort
				if tp.Type == intstr.Int && tp.IntVal == 0 {
					tp = intstr.FromInt32(sp.Port)
				}
				if _, ok := portByNameOrNumber(w.container, tp, sp.Protocol); !ok {
					t.Errorf("Service %s port %s: target %s/%s is not a port of %s %s", svc.Name, sp.Name, tp.String(), sp.Protocol, w.kind, w.name)
				}
			}
		}
		if n == 0 {
			t.Errorf("Service %s selects no workload", svc.Name)
		}
		for _, sp := range svc.Spec.Ports {
			for _, msg := range validation.IsValidPortName(sp.Name) {
				t.Errorf("Service %s port name %q: %s", svc.Name, sp.Name, msg)
			}
		}
	}
}

// TestSecretsStayOutOfConfigMaps: the example Secrets hold exactly the keys
// the workloads read; no ConfigMap holds a secret's name as a key or a
// secret-looking setting.
func TestSecretsStayOutOfConfigMaps(t *testing.T) {
	s := manifests(t)
	mesh := s.secrets["ssemesh-mesh"]
	if mesh == nil {
		t.Fatalf("%s: no Secret ssemesh-mesh", exampleSecrets)
	}
	keys := secretKeys(mesh)
	for _, se := range secretEnv {
		if _, ok := keys[se.env]; !ok {
			t.Errorf("Secret ssemesh-mesh: no key %s", se.env)
		}
	}
	// Every key a workload reads exists in the template, and every key of
	// the template is read by some workload.
	used := map[string]bool{}
	for _, w := range workloads(t) {
		for _, e := range w.container.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				r := e.ValueFrom.SecretKeyRef
				used[r.Name+"/"+r.Key] = true
				if sec := s.secrets[r.Name]; sec == nil {
					t.Errorf("%s: env %s reads Secret %q, which %s does not describe", w.name, e.Name, r.Name, exampleSecrets)
				} else if _, ok := secretKeys(sec)[r.Key]; !ok {
					t.Errorf("%s: env %s reads key %q of Secret %q, which %s does not have", w.name, e.Name, r.Key, r.Name, exampleSecrets)
				}
				if r.Optional != nil && *r.Optional {
					t.Errorf("%s: env %s is optional: a missing secret must stop the pod", w.name, e.Name)
				}
			}
		}
	}
	for name, sec := range s.secrets {
		for k := range secretKeys(sec) {
			if !used[name+"/"+k] {
				t.Errorf("Secret %s key %s is read by no workload", name, k)
			}
		}
	}
	secretRE := regexp.MustCompile(`(?m)^\s*(token|secret|key|password|accept_secrets|accept_keys|hs256_secret)\s*:\s*(.*)$`)
	for name, cm := range s.configMaps {
		for k, v := range cm.Data {
			for _, se := range secretEnv {
				if k == se.env {
					t.Errorf("ConfigMap %s has key %s", name, k)
				}
			}
			for _, m := range secretRE.FindAllStringSubmatch(v, -1) {
				val := strings.Trim(strings.TrimSpace(strings.SplitN(m[2], " #", 2)[0]), `'"`)
				if ref := envRefRE.FindStringSubmatch(val); val != "" && (ref == nil || ref[0] != val) {
					t.Errorf("ConfigMap %s key %s: %s: %q is written in the ConfigMap; reference a variable from a Secret instead", name, k, m[1], val)
				}
			}
		}
	}
}
