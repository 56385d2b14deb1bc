// Package mesh keeps the membership of an ssemesh node: memberlist gossip
// among the nodes of one data centre, and Consul for back-end discovery,
// self-registration and the nodes of other data centres. It publishes what
// it knows as immutable View snapshots and a 1-buffered Changed signal;
// choosing parents from a view is the business of package topology.
//
// # Gossip
//
// Each node gossips compact JSON metadata (id, dc, tier, client and admin
// addresses, clients, capacity, streams, draining). Config.Validate bounds
// every field so the worst case stays under memberlist's 512-byte limit.
// Load changes (SetLoad) are pushed at most once per Config.MetaInterval.
//
// Member states, as this node sees them:
//   - alive: answering.
//   - suspect: two of this node's pings in a row went unanswered (probe.go:
//     memberlist raises no event for its own suspicion, so the node pings
//     its candidate parents every probe interval and other members in
//     turn). Cleared by the next answer, or replaced by dead.
//   - draining: the member announced it is shutting down.
//   - left: it left gossip after announcing draining (SetDraining, or
//     Shutdown without it).
//   - dead: it stopped answering, or vanished without announcing draining.
//
// Members that left or died stay in the view with that state for
// Config.Retain (default one minute), so an operator can see what went
// away, then are dropped. Readers must treat only alive members as usable.
//
// With GossipConfig.Fast, a member that stops answering is suspect after
// about 0.5 s and dead within about 3 s on loopback.
//
// # Gossip security
//
// Gossip is closed by default: Config.Validate refuses a non-loopback
// GossipConfig.Bind (the default 0.0.0.0:7946 included) without
// GossipConfig.Key, unless GossipConfig.InsecureNoKey says the network is
// trusted. The key encrypts and authenticates every packet;
// GossipConfig.AcceptKeys are further keys accepted for decryption only, so
// the key can be rotated without downtime. GossipConfig.AllowedNetworks
// optionally limits members to CIDR networks.
//
// Every member's advertised client and admin addresses must have the IP
// address it gossips from as host (DNS names are accepted only with a
// key); other members are refused and never appear in the view. So a
// member can point peers only at its own host.
//
// # Consul
//
// When ConsulConfig.Address is set:
//   - Back ends are the services carrying ConsulConfig.Tag, followed with
//     blocking queries (catalog service list, then the passing instances of
//     each back end). Service meta: ssemesh-path (upstream path),
//     ssemesh-mount (client path, default the path), ssemesh-prefix
//     ("true"), ssemesh-scheme (http or https).
//   - The node registers itself as ConsulConfig.Service with an HTTP check
//     on http://<admin>/readyz, re-registers when the agent loses the
//     registration, and deregisters when draining or shutting down.
//   - It joins the gossip addresses of the passing nodes of its own data
//     centre, with or without seeds.
//   - Passing nodes of the other data centres become members with Source
//     "consul".
//
// While Consul is unreachable the last known back ends and remote members
// are kept, View.ConsulOK is false and View.ConsulError names the cause;
// the outage is logged once when it starts and once when it ends, and
// every query retries with jittered backoff.
package mesh
