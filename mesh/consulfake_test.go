package mesh

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// fakeConsul is an in-memory Consul (one local agent, a catalog per data
// centre) implementing consulAPI for fast unit tests of mesh's Consul logic.
//
// Semantics, as far as mesh relies on them:
//   - Each data centre has its own index, starting at 1. Every change to a
//     data centre (an instance added, removed, or its health changed)
//     raises it by one.
//   - A read with Index 0 answers at once. A read with Index n blocks until
//     the data centre's index is above n, then answers; or after Wait (when
//     Wait > 0) with the unchanged data; or fails with the context's error
//     when ctx ends. Like Consul it answers with the current index, which
//     may be below n after restart.
//   - DC "" is the agent's data centre. A data centre not known yet is
//     created empty by the first read of it; Datacenters lists every one.
//   - Services lists every service of the data centre, passing or not, with
//     the union of its instances' tags. Passing lists only passing
//     instances of the service, carrying the tag when one is given, each
//     with a node (named fake-<dc>, address nodeAddr) as Consul does.
//   - Register and Deregister act on the agent: its own list of services
//     and its data centre's catalog. A registered service passes at once
//     (its HTTP check is not run).
//   - setDown makes every call fail, blocked ones included; failDC makes
//     the reads of one data centre fail. restart forgets the agent's
//     services and its data centre's catalog and sets that index back to 1,
//     like a dev agent that restarted.
//
// Every call is recorded (method, data centre, time) for tests of pacing.
type fakeConsul struct {
	agentDC string

	mu     sync.Mutex
	dcs    map[string]*fakeDC
	agent  map[string]*api.AgentServiceRegistration // registered through the agent
	wake   chan struct{}                            // closed and replaced on every change
	down   error
	downDC map[string]error
	calls  []fakeCall
}

type fakeDC struct {
	index     uint64
	instances map[string]*fakeInstance // by service ID
}

type fakeInstance struct {
	svc     api.AgentService
	passing bool
}

type fakeCall struct {
	method, dc string
	at         time.Time
}

// nodeAddr is the address of the Consul node every fake instance runs on.
const nodeAddr = "127.0.0.2"

func newFakeConsul(agentDC string) *fakeConsul {
	return &fakeConsul{
		agentDC: agentDC,
		dcs:     map[string]*fakeDC{},
		agent:   map[string]*api.AgentServiceRegistration{},
		wake:    make(chan struct{}),
		downDC:  map[string]error{},
	}
}

var _ consulAPI = (*fakeConsul)(nil)

// dcLocked returns data centre name ("" is the agent's), creating it.
func (f *fakeConsul) dcLocked(name string) (string, *fakeDC) {
	if name == "" {
		name = f.agentDC
	}
	d := f.dcs[name]
	if d == nil {
		d = &fakeDC{index: 1, instances: map[string]*fakeInstance{}}
		f.dcs[name] = d
	}
	return name, d
}

// changedLocked bumps a data centre's index and wakes blocked reads.
func (f *fakeConsul) changedLocked(d *fakeDC) {
	d.index++
	f.wakeLocked()
}

func (f *fakeConsul) wakeLocked() {
	close(f.wake)
	f.wake = make(chan struct{})
}

// begin records a call and fails it when the fake is down.
func (f *fakeConsul) begin(ctx context.Context, method, dc string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dc, _ = f.dcLocked(dc)
	f.calls = append(f.calls, fakeCall{method: method, dc: dc, at: time.Now()})
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.down != nil {
		return f.down
	}
	return f.downDC[dc]
}

// block waits as a blocking query does; on success the caller reads the
// data under f.mu, which block returns held.
func (f *fakeConsul) block(ctx context.Context, q consulQuery) (*fakeDC, string, error) {
	var timeout <-chan time.Time
	if q.Index > 0 && q.Wait > 0 {
		t := time.NewTimer(q.Wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		f.mu.Lock()
		name, d := f.dcLocked(q.DC)
		err := f.down
		if err == nil {
			err = f.downDC[name]
		}
		if err != nil {
			f.mu.Unlock()
			return nil, "", err
		}
		if q.Index == 0 || d.index > q.Index {
			return d, name, nil
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-timeout:
			f.mu.Lock()
			name, d = f.dcLocked(q.DC)
			return d, name, nil
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
}

func (f *fakeConsul) Services(ctx context.Context, q consulQuery) (map[string][]string, uint64, error) {
	if err := f.begin(ctx, "services", q.DC); err != nil {
		return nil, 0, err
	}
	d, _, err := f.block(ctx, q)
	if err != nil {
		return nil, 0, err
	}
	defer f.mu.Unlock()
	out := map[string][]string{}
	for _, in := range d.instances {
		tags := append(out[in.svc.Service], in.svc.Tags...)
		sort.Strings(tags)
		out[in.svc.Service] = slices.Compact(tags)
	}
	for name, tags := range out {
		if tags == nil {
			out[name] = []string{}
		}
	}
	return out, d.index, nil
}

func (f *fakeConsul) Passing(ctx context.Context, service, tag string, q consulQuery) ([]*api.ServiceEntry, uint64, error) {
	if err := f.begin(ctx, "passing "+service, q.DC); err != nil {
		return nil, 0, err
	}
	d, dc, err := f.block(ctx, q)
	if err != nil {
		return nil, 0, err
	}
	defer f.mu.Unlock()
	var out []*api.ServiceEntry
	for _, in := range d.instances {
		if in.svc.Service != service || !in.passing || (tag != "" && !slices.Contains(in.svc.Tags, tag)) {
			continue
		}
		svc := copyService(in.svc)
		out = append(out, &api.ServiceEntry{
			Node:    &api.Node{Node: "fake-" + dc, Address: nodeAddr, Datacenter: dc},
			Service: &svc,
		})
	}
	return out, d.index, nil
}

func (f *fakeConsul) Datacenters(ctx context.Context) ([]string, error) {
	if err := f.begin(ctx, "datacenters", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.dcs)), nil
}

func (f *fakeConsul) AgentService(ctx context.Context, id string) (*api.AgentService, error) {
	if err := f.begin(ctx, "agent service", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, d := f.dcLocked("")
	in := d.instances[id]
	if f.agent[id] == nil || in == nil {
		return nil, nil
	}
	svc := copyService(in.svc)
	return &svc, nil
}

func (f *fakeConsul) Register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	if err := f.begin(ctx, "register", ""); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	dc, d := f.dcLocked("")
	d.instances[reg.ID] = &fakeInstance{passing: true, svc: copyService(api.AgentService{
		ID: reg.ID, Service: reg.Name, Tags: reg.Tags, Address: reg.Address, Port: reg.Port,
		Meta: reg.Meta, Datacenter: dc,
	})}
	r := *reg
	r.Meta = maps.Clone(reg.Meta)
	if reg.Check != nil {
		c := *reg.Check
		r.Check = &c
	}
	f.agent[reg.ID] = &r
	f.changedLocked(d)
	return nil
}

func (f *fakeConsul) Deregister(ctx context.Context, id string) error {
	if err := f.begin(ctx, "deregister", ""); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, d := f.dcLocked("")
	if _, ok := d.instances[id]; ok {
		delete(d.instances, id)
		f.changedLocked(d)
	}
	delete(f.agent, id)
	return nil
}

func copyService(s api.AgentService) api.AgentService {
	s.Tags = slices.Clone(s.Tags)
	s.Meta = maps.Clone(s.Meta)
	return s
}

// add puts an instance into a data centre's catalog ("" is the agent's).
func (f *fakeConsul) add(dc string, svc api.AgentService, passing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dc, d := f.dcLocked(dc)
	svc.Datacenter = dc
	d.instances[svc.ID] = &fakeInstance{svc: copyService(svc), passing: passing}
	f.changedLocked(d)
}

// setPassing changes an instance's health.
func (f *fakeConsul) setPassing(dc, id string, passing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, d := f.dcLocked(dc)
	if in := d.instances[id]; in != nil && in.passing != passing {
		in.passing = passing
		f.changedLocked(d)
	}
}

// remove deletes an instance from a data centre's catalog.
func (f *fakeConsul) remove(dc, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, d := f.dcLocked(dc)
	if _, ok := d.instances[id]; ok {
		delete(d.instances, id)
		f.changedLocked(d)
	}
	if dc == "" || dc == f.agentDC {
		delete(f.agent, id)
	}
}

// setDown makes every call fail with err (nil: answer again).
func (f *fakeConsul) setDown(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = err
	f.wakeLocked()
}

// failDC makes the reads of one data centre fail with err (nil: answer).
func (f *fakeConsul) failDC(dc string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.downDC, dc)
	} else {
		f.downDC[dc] = err
	}
	f.wakeLocked()
}

// restart makes the agent forget everything, as a restarted dev agent
// does: its services, its data centre's catalog, and that index.
func (f *fakeConsul) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, d := f.dcLocked("")
	d.instances = map[string]*fakeInstance{}
	d.index = 1
	clear(f.agent)
	f.wakeLocked()
}

// registration returns what the agent was last asked to register as id,
// or nil when the agent does not have id.
func (f *fakeConsul) registration(id string) *api.AgentServiceRegistration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.agent[id]; r != nil {
		c := *r
		return &c
	}
	return nil
}

// index is a data centre's current index.
func (f *fakeConsul) index(dc string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, d := f.dcLocked(dc)
	return d.index
}

// callsOf returns when each call of method was made, in order.
func (f *fakeConsul) callsOf(method string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, c := range f.calls {
		if c.method == method {
			out = append(out, c.at)
		}
	}
	return out
}

var errFakeDown = errors.New("connect: connection refused")

// restartDC empties another data centre's catalog and resets its index, as
// that data centre's Consul servers do when they restart without their data.
func (f *fakeConsul) restartDC(dc string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, d := f.dcLocked(dc)
	d.instances = map[string]*fakeInstance{}
	d.index = 1
	f.wakeLocked()
}

// callsIn counts the calls of method made to data centre dc.
func (f *fakeConsul) callsIn(method, dc string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.method == method && c.dc == dc {
			n++
		}
	}
	return n
}
