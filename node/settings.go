package node

import (
	"net/netip"
	"reflect"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/admit"
	"github.com/ssemesh/ssemesh/internal/iplimit"
	"github.com/ssemesh/ssemesh/internal/meshauth"
)

// settings are the parts of a node's configuration that a reload may
// change, with what is built from them. A settings value never changes
// once published: a reload builds a new one and swaps it in, and a request
// takes the snapshot in force when it arrived.
type settings struct {
	// cfg is the configuration as last accepted. Its Limits, CORS,
	// ExposeMounts, TrustedProxies, Backends, Auth, Admin.Token,
	// Mesh.Secret, Mesh.AcceptSecrets, Drain and Log.Level are in force;
	// the other keys are those the node started with.
	cfg Config
	// perIP bounds each client address; trusted are the proxies whose
	// X-Forwarded-For names the client.
	perIP   *iplimit.Limiter
	trusted []netip.Prefix
	// pacer paces new subscribers node-wide.
	pacer *admit.Pacer
	// auth decides who may read which stream.
	auth *authorizers
	// signer proves this node's membership to parents and peers; verifier
	// checks children's and peers' proofs. Both nil without mesh.secret.
	signer   *meshauth.Signer
	verifier *meshauth.Verifier
}

// live is the settings in force.
func (n *Node) live() *settings { return n.cur.Load() }

// newSettings builds the settings of cfg. What did not change from prev
// (when given) is kept as it is: the per-address counts, the authorizers
// with their caches and key sets.
func newSettings(cfg Config, prev *settings, log logrus.FieldLogger) (*settings, error) {
	trusted, err := parseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	st := &settings{cfg: cfg, trusted: trusted}
	if prev != nil && prev.cfg.Limits.PerIP == cfg.Limits.PerIP {
		st.perIP = prev.perIP
	} else {
		st.perIP = iplimit.New(cfg.Limits.PerIP.limiterConfig())
	}
	if prev != nil && prev.cfg.Limits.Admit == cfg.Limits.Admit {
		st.pacer = prev.pacer
	} else if prev != nil {
		// Callers waiting keep their turn in the old pacer; the new pace
		// starts from the old bucket.
		st.pacer = prev.pacer
		st.pacer.SetConfig(cfg.Limits.Admit.pacerConfig())
	} else {
		st.pacer = admit.New(cfg.Limits.Admit.pacerConfig())
	}
	if prev != nil && sameAuth(prev.cfg, cfg) {
		st.auth = prev.auth
	} else if st.auth, err = newAuthorizers(cfg, log); err != nil {
		return nil, err
	}
	if cfg.Mesh.Secret != "" {
		st.signer = meshauth.NewSigner(cfg.NodeID, cfg.Mesh.Secret)
		st.verifier = meshauth.NewVerifier(append([]string{cfg.Mesh.Secret}, cfg.Mesh.AcceptSecrets...), 0)
	}
	return st, nil
}

// sameAuth reports whether two configurations authorize clients alike.
func sameAuth(a, b Config) bool {
	if !reflect.DeepEqual(a.Auth, b.Auth) {
		return false
	}
	auths := func(c Config) map[string]any {
		m := map[string]any{}
		for _, be := range c.Backends {
			if be.Auth != nil {
				m[be.Name] = *be.Auth
			}
		}
		return m
	}
	return reflect.DeepEqual(auths(a), auths(b))
}
