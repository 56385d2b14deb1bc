package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
)

// consulAPI is the part of Consul's HTTP API that mesh uses. consulClient
// implements it over consul/api; the tests use an in-memory agent.
type consulAPI interface {
	// Services lists the services of a data centre's catalog, each with
	// the union of its instances' tags, and the catalog's index.
	Services(ctx context.Context, q consulQuery) (map[string][]string, uint64, error)
	// Passing lists the instances of service whose checks all pass and
	// that carry tag ("" for any tag), and the index of that answer.
	Passing(ctx context.Context, service, tag string, q consulQuery) ([]*api.ServiceEntry, uint64, error)
	// Datacenters lists the data centres Consul knows, this one included.
	Datacenters(ctx context.Context) ([]string, error)
	// AgentService returns the local agent's registration of service id,
	// or nil (and no error) when the agent has none.
	AgentService(ctx context.Context, id string) (*api.AgentService, error)
	// Register registers a service with the local agent, replacing a
	// registration of the same ID and its checks.
	Register(ctx context.Context, reg *api.AgentServiceRegistration) error
	// Deregister removes a service from the local agent; a service the
	// agent does not have is no error.
	Deregister(ctx context.Context, id string) error
}

// consulQuery says which data centre a read asks and, for a blocking
// query, what it waits for.
type consulQuery struct {
	// DC is the data centre asked; "" is the agent's own.
	DC string
	// Index makes the read a blocking query: Consul answers once its
	// index has moved past Index, or after Wait. 0 answers at once.
	Index uint64
	// Wait bounds a blocking query.
	Wait time.Duration
}

// shortCallTimeout bounds Consul calls that are not blocking queries, in
// case an agent accepts connections but never answers.
const shortCallTimeout = 10 * time.Second

// consulClient is consulAPI over two consul/api clients: reads that may
// block (a Wait is given) go through one without an overall timeout, as
// they hold the request for up to Wait and their context bounds them;
// every other call goes through one bounded by shortCallTimeout.
type consulClient struct {
	watch, short *api.Client
}

func newConsulClient(cc ConsulConfig) (*consulClient, error) {
	// DefaultConfig reads the CONSUL_* environment (TLS files, SSL, token),
	// so both clients honour the same TLS settings; the address, token and
	// data centre given in the configuration take precedence.
	base := api.DefaultConfig()
	base.Address = cc.Address
	if cc.Token != "" {
		base.Token = cc.Token
	}
	base.Datacenter = cc.Datacenter
	client := func(timeout time.Duration) (*api.Client, error) {
		hc, err := api.NewHttpClient(http.DefaultTransport.(*http.Transport).Clone(), base.TLSConfig)
		if err != nil {
			return nil, fmt.Errorf("mesh: consul http client: %w", err)
		}
		hc.Timeout = timeout
		conf := *base
		conf.HttpClient = hc
		c, err := api.NewClient(&conf)
		if err != nil {
			return nil, fmt.Errorf("mesh: consul client for %s: %w", cc.Address, err)
		}
		return c, nil
	}
	watch, err := client(0)
	if err != nil {
		return nil, err
	}
	short, err := client(shortCallTimeout)
	if err != nil {
		return nil, err
	}
	return &consulClient{watch: watch, short: short}, nil
}

func (c *consulClient) pick(q consulQuery) *api.Client {
	if q.Wait > 0 {
		return c.watch
	}
	return c.short
}

func queryOptions(ctx context.Context, q consulQuery) *api.QueryOptions {
	return (&api.QueryOptions{Datacenter: q.DC, WaitIndex: q.Index, WaitTime: q.Wait}).WithContext(ctx)
}

func lastIndex(meta *api.QueryMeta) uint64 {
	if meta == nil {
		return 0
	}
	return meta.LastIndex
}

func (c *consulClient) Services(ctx context.Context, q consulQuery) (map[string][]string, uint64, error) {
	services, meta, err := c.pick(q).Catalog().Services(queryOptions(ctx, q))
	return services, lastIndex(meta), err
}

func (c *consulClient) Passing(ctx context.Context, service, tag string, q consulQuery) ([]*api.ServiceEntry, uint64, error) {
	entries, meta, err := c.pick(q).Health().Service(service, tag, true, queryOptions(ctx, q))
	return entries, lastIndex(meta), err
}

func (c *consulClient) Datacenters(ctx context.Context) ([]string, error) {
	// Catalog().Datacenters takes no context; the raw query does, so
	// Shutdown never waits on a hung agent.
	var dcs []string
	_, err := c.short.Raw().Query("/v1/catalog/datacenters", &dcs, queryOptions(ctx, consulQuery{}))
	return dcs, err
}

func (c *consulClient) AgentService(ctx context.Context, id string) (*api.AgentService, error) {
	svc, _, err := c.short.Agent().Service(id, queryOptions(ctx, consulQuery{}))
	if isNotFound(err) {
		return nil, nil
	}
	return svc, err
}

func (c *consulClient) Register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	return c.short.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx))
}

func (c *consulClient) Deregister(ctx context.Context, id string) error {
	err := c.short.Agent().ServiceDeregisterOpts(id, queryOptions(ctx, consulQuery{}))
	if isNotFound(err) {
		return nil
	}
	return err
}

func isNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}
