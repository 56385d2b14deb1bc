package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/clientauth"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

// The Grafana dashboard in deploy/grafana queries the metrics a node serves
// on /metrics. These tests keep the two in step: the dashboard must be
// importable, and every metric family it queries must exist on real nodes
// (a mesh of two, one of them with client authorization), with the labels
// the queries use.

const dashboardFile = "../deploy/grafana/ssemesh.json"

// dashboardDatasource is the datasource every panel and query names: the
// dashboard's datasource variable.
const dashboardDatasource = "${datasource}"

// promSynthesized are series Prometheus writes itself for every scrape
// target: they are on no /metrics page.
var promSynthesized = map[string][]string{"up": nil}

// dashDescribedOnly are the families a node emits only once something happened
// (their label values come from a map of counts). The test causes each of
// them, but only as well as a test can: when one did not happen, the family
// is accepted if the node's collector describes it, and the test says so.
// Any other family the dashboard queries must be in a scrape.
var dashDescribedOnly = map[string]string{
	"ssemesh_requests_refused_total":          "counter",
	"ssemesh_slow_consumer_disconnects_total": "counter",
	"ssemesh_upstream_errors_total":           "counter",
	"ssemesh_catchup_refused_total":           "counter",
}

type dashDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashTarget struct {
	RefID      string          `json:"refId"`
	Expr       string          `json:"expr"`
	Datasource *dashDatasource `json:"datasource"`
}

type dashGridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type dashPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  *dashDatasource `json:"datasource"`
	GridPos     *dashGridPos    `json:"gridPos"`
	Collapsed   bool            `json:"collapsed"`
	Targets     []dashTarget    `json:"targets"`
	Panels      []dashPanel     `json:"panels"`
}

type dashVariable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *dashDatasource `json:"datasource"`
}

type grafanaDashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	Description   string      `json:"description"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
}

func loadGrafanaDashboard(t *testing.T) *grafanaDashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(raw) {
		var v any
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, json.Unmarshal(raw, &v))
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

// allPanels lists the panels, those nested in collapsed rows included.
func (d *grafanaDashboard) allPanels() []*dashPanel {
	var out []*dashPanel
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for i := range ps {
			out = append(out, &ps[i])
			walk(ps[i].Panels)
		}
	}
	walk(d.Panels)
	return out
}

// dashQuery is one PromQL expression of the dashboard and where it is.
type dashQuery struct {
	where, expr string
}

// queries collects every PromQL expression: the panels' targets and the
// query variables' definitions.
func (d *grafanaDashboard) queries(t *testing.T) []dashQuery {
	t.Helper()
	var out []dashQuery
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) != "" {
				out = append(out, dashQuery{fmt.Sprintf("panel %d %q, query %s", p.ID, p.Title, tg.RefID), tg.Expr})
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		seen := map[string]bool{}
		add := func(q string) {
			if q = strings.TrimSpace(q); q != "" && !seen[q] {
				seen[q] = true
				out = append(out, dashQuery{"variable " + v.Name, q})
			}
		}
		add(v.Definition)
		var s string
		var obj struct {
			Query string `json:"query"`
		}
		switch {
		case len(v.Query) == 0:
		case json.Unmarshal(v.Query, &s) == nil:
			add(s)
		case json.Unmarshal(v.Query, &obj) == nil:
			add(obj.Query)
		default:
			t.Errorf("variable %s: unreadable query %s", v.Name, v.Query)
		}
	}
	return out
}

func TestDashboardIsImportable(t *testing.T) {
	d := loadGrafanaDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want a uid, a title and a schema of Grafana 9 or later", d.UID, d.Title, d.SchemaVersion)
	}
	if !strings.Contains(d.Description, "/v1/topology") {
		t.Errorf("the dashboard's description does not say per-hop lag is in the topology API (/v1/topology)")
	}

	vars := map[string]dashVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("no Prometheus datasource variable named datasource: %+v", v)
	}
	for _, name := range []string{"dc", "node", "instance"} {
		v, ok := vars[name]
		switch {
		case !ok || v.Type != "query":
			t.Errorf("no query variable %s", name)
		case !strings.Contains(v.Definition, "ssemesh_node_info"):
			t.Errorf("variable %s is not read from ssemesh_node_info: %s", name, v.Definition)
		case v.Datasource == nil || v.Datasource.UID != dashboardDatasource:
			t.Errorf("variable %s does not use %s: %+v", name, dashboardDatasource, v.Datasource)
		}
	}

	ids := map[int]string{}
	for _, p := range d.allPanels() {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			t.Errorf("%s: no id", where)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("%s: id also used by %s", where, other)
		}
		ids[p.ID] = where
		if p.Title == "" || p.Type == "" {
			t.Errorf("%s: no title or type", where)
		}
		if strings.TrimSpace(p.Description) == "" {
			t.Errorf("%s: no description", where)
		}
		if p.Datasource == nil || p.Datasource.UID != dashboardDatasource {
			t.Errorf("%s: datasource %+v, want uid %s", where, p.Datasource, dashboardDatasource)
		}
		if g := p.GridPos; g == nil || g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v", where, g)
		}
		if p.Type == "row" {
			if len(p.Panels) > 0 && !p.Collapsed {
				t.Errorf("%s: an open row holds panels; they belong at the top level", where)
			}
			continue
		}
		if len(p.Panels) > 0 {
			t.Errorf("%s: panels nested in a %s", where, p.Type)
		}
		if p.Type == "text" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: missing or repeated refId %q", where, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s, query %s: no expression", where, tg.RefID)
			}
			if tg.Datasource != nil && tg.Datasource.UID != dashboardDatasource {
				t.Errorf("%s, query %s: datasource %+v", where, tg.RefID, tg.Datasource)
			}
		}
	}
	dashCheckNoOverlap(t, "the dashboard", d.Panels)
	for _, p := range d.Panels {
		if p.Type == "row" && len(p.Panels) > 0 {
			dashCheckNoOverlap(t, fmt.Sprintf("row %q", p.Title), p.Panels)
		}
	}

	for _, q := range d.queries(t) {
		if _, err := parsePromQL(q.expr); err != nil {
			t.Errorf("%s: %v\n\t%s", q.where, err, q.expr)
		}
	}
}

// dashCheckNoOverlap fails for panels of one level that cover the same cell.
func dashCheckNoOverlap(t *testing.T, where string, ps []dashPanel) {
	t.Helper()
	for i := range ps {
		for j := i + 1; j < len(ps); j++ {
			a, b := ps[i].GridPos, ps[j].GridPos
			if a == nil || b == nil {
				continue
			}
			if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
				t.Errorf("%s: panels %d and %d overlap (%+v, %+v)", where, ps[i].ID, ps[j].ID, *a, *b)
			}
		}
	}
}

// ---- a small PromQL reader: enough to find metric names and label names.

// promSelector is one metric name in an expression.
type promSelector struct {
	name   string   // as written, suffix included (ssemesh_x_bucket)
	labels []string // label names of its matchers
	fn     string   // innermost function or aggregation around it
}

// promQuery is what an expression uses.
type promQuery struct {
	selectors []promSelector
	// grouping holds the label names of by, without, on, ignoring,
	// group_left and group_right, and label_values' label.
	grouping []string
}

var promFunctions = dashSetOf(
	// aggregations
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
	// functions
	"abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month", "day_of_week",
	"day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
	"histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "hour", "idelta", "increase", "irate",
	"label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round",
	"scalar", "sgn", "sort", "sort_desc", "sort_by_label", "sort_by_label_desc", "sqrt", "time", "timestamp", "vector", "year",
	"avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
	"stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time", "mad_over_time",
	"acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi",
	// Grafana's templating function with a PromQL argument
	"query_result",
)

var promGrouping = dashSetOf("by", "without", "on", "ignoring", "group_left", "group_right")

var promKeywords = dashSetOf("and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end")

// promCounterFunctions are only meaningful over counters.
var promCounterFunctions = dashSetOf("rate", "irate", "increase", "resets")

var promLabelNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func dashSetOf(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}

// parsePromQL finds the metric names, their matchers' label names and the
// grouping labels of expr. Any other identifier (an unknown function, a
// keyword it does not know) is an error rather than a guess.
func parsePromQL(expr string) (*promQuery, error) {
	q := &promQuery{}
	return q, q.scan(expr)
}

func promIsIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func promIsIdentChar(c byte) bool { return promIsIdentStart(c) || c == ':' || c >= '0' && c <= '9' }

func promIsDigit(c byte) bool { return c >= '0' && c <= '9' }

func promSkipSpace(s string, i int) int {
	for i < len(s) && strings.IndexByte(" \t\r\n", s[i]) >= 0 {
		i++
	}
	return i
}

// promSkipString returns the index after the string literal starting at i.
func promSkipString(s string, i int) (int, error) {
	quote := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && quote != '`':
			j++
		case s[j] == quote:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d", i)
}

// promMatchClose returns the index of the bracket closing the one at i,
// skipping strings.
func promMatchClose(s string, i int) (int, error) {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := promSkipString(s, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case '(', '{', '[':
			depth++
		case ')', '}', ']':
			depth--
			if depth == 0 {
				return j, nil
			}
		}
	}
	return 0, fmt.Errorf("unbalanced %q at %d", s[i], i)
}

// promLastTopLevelComma is the index of the last comma of s outside brackets
// and strings, or -1.
func promLastTopLevelComma(s string) (int, error) {
	last, depth := -1, 0
	for j := 0; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := promSkipString(s, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case '(', '{', '[':
			depth++
		case ')', '}', ']':
			depth--
		case ',':
			if depth == 0 {
				last = j
			}
		}
	}
	return last, nil
}

// promMatchers reads the label matchers of the braces at i and returns the
// label names and the index after the closing brace.
func promMatchers(s string, i int) ([]string, int, error) {
	var labels []string
	i++ // '{'
	for {
		i = promSkipSpace(s, i)
		if i >= len(s) {
			return nil, 0, fmt.Errorf("unterminated label matchers")
		}
		if s[i] == '}' {
			return labels, i + 1, nil
		}
		j := i
		for j < len(s) && promIsIdentChar(s[j]) {
			j++
		}
		name := s[i:j]
		if !promLabelNameRE.MatchString(name) {
			return nil, 0, fmt.Errorf("bad label name at %d", i)
		}
		labels = append(labels, name)
		j = promSkipSpace(s, j)
		switch {
		case strings.HasPrefix(s[j:], "=~"), strings.HasPrefix(s[j:], "!~"), strings.HasPrefix(s[j:], "!="):
			j += 2
		case strings.HasPrefix(s[j:], "="):
			j++
		default:
			return nil, 0, fmt.Errorf("no matcher operator after label %s", name)
		}
		j = promSkipSpace(s, j)
		if j >= len(s) || strings.IndexByte("\"'`", s[j]) < 0 {
			return nil, 0, fmt.Errorf("label %s: the value is not a string", name)
		}
		end, err := promSkipString(s, j)
		if err != nil {
			return nil, 0, err
		}
		i = promSkipSpace(s, end)
		if i < len(s) && s[i] == ',' {
			i++
		}
	}
}

func (q *promQuery) scan(s string) error {
	var stack []string // the function of each open parenthesis ("" for plain ones)
	pending := ""      // the function or aggregation whose parenthesis comes next
	innermost := func() string {
		for k := len(stack) - 1; k >= 0; k-- {
			if stack[k] != "" {
				return stack[k]
			}
		}
		return ""
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case strings.IndexByte(" \t\r\n", c) >= 0:
			i++
		case c == '"' || c == '\'' || c == '`':
			end, err := promSkipString(s, i)
			if err != nil {
				return err
			}
			i = end
		case c == '$': // a Grafana variable: $name or ${name[:format]}
			i++
			if i < len(s) && s[i] == '{' {
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return fmt.Errorf("unterminated ${ at %d", i)
				}
				i += end + 1
			} else {
				for i < len(s) && promIsIdentChar(s[i]) {
					i++
				}
			}
		case c == '[': // a range or a subquery: durations and variables only
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return fmt.Errorf("unterminated [ at %d", i)
			}
			i += end + 1
		case c == '{':
			return fmt.Errorf("label matchers without a metric name at %d: the test cannot check them", i)
		case c == '(':
			stack = append(stack, pending)
			pending = ""
			i++
		case c == ')':
			if len(stack) == 0 {
				return fmt.Errorf("unbalanced ) at %d", i)
			}
			stack = stack[:len(stack)-1]
			i++
		case promIsDigit(c) || c == '.' && i+1 < len(s) && promIsDigit(s[i+1]): // numbers, durations
			for i < len(s) && (promIsIdentChar(s[i]) || s[i] == '.') {
				i++
			}
		case promIsIdentStart(c):
			j := i
			for j < len(s) && promIsIdentChar(s[j]) {
				j++
			}
			word, lower := s[i:j], strings.ToLower(s[i:j])
			k := promSkipSpace(s, j)
			var next byte
			if k < len(s) {
				next = s[k]
			}
			switch {
			case promGrouping[lower]:
				i = j
				if next == '(' {
					end, err := promMatchClose(s, k)
					if err != nil {
						return err
					}
					for _, l := range strings.Split(s[k+1:end], ",") {
						if l = strings.TrimSpace(l); l != "" {
							if !promLabelNameRE.MatchString(l) {
								return fmt.Errorf("%s: bad label name %q", word, l)
							}
							q.grouping = append(q.grouping, l)
						}
					}
					i = end + 1
				}
			case word == "label_values" && next == '(':
				// Grafana: label_values(label) or label_values(selector, label).
				end, err := promMatchClose(s, k)
				if err != nil {
					return err
				}
				inner := s[k+1 : end]
				comma, err := promLastTopLevelComma(inner)
				if err != nil {
					return err
				}
				label := strings.TrimSpace(inner[comma+1:])
				if !promLabelNameRE.MatchString(label) {
					return fmt.Errorf("label_values: bad label name %q", label)
				}
				q.grouping = append(q.grouping, label)
				if comma >= 0 {
					if err := q.scan(inner[:comma]); err != nil {
						return err
					}
				}
				i = end + 1
			case promKeywords[lower]:
				i = j
			case promFunctions[word]:
				pending = word
				i = j
			case next == '(':
				return fmt.Errorf("unknown function %s", word)
			default: // a metric name
				sel := promSelector{name: word, fn: innermost()}
				i = j
				if next == '{' {
					labels, end, err := promMatchers(s, k)
					if err != nil {
						return fmt.Errorf("%s: %v", word, err)
					}
					sel.labels, i = labels, end
				}
				q.selectors = append(q.selectors, sel)
			}
		default: // operators, commas, @
			i++
		}
	}
	if len(stack) != 0 {
		return fmt.Errorf("unbalanced (")
	}
	return nil
}

// ---- the families nodes serve

// dashFamily is a metric family as the nodes show it.
type dashFamily struct {
	typ       string // counter, gauge, histogram, summary, untyped
	labels    map[string]bool
	scraped   bool // in a scrape of /metrics; otherwise only described
	described bool // in the node collector's Describe
}

// dashScrapeFamilies fetches n's /metrics and adds its families to fams.
func dashScrapeFamilies(t *testing.T, n *Node, fams map[string]*dashFamily) {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", n.ID(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d", n.ID(), resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", n.ID(), err)
	}
	for name, mf := range parsed {
		f := fams[name]
		if f == nil {
			f = &dashFamily{labels: map[string]bool{}}
			fams[name] = f
		}
		f.scraped = true
		f.typ = strings.ToLower(mf.GetType().String())
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			f.labels["le"] = true
		case dto.MetricType_SUMMARY:
			f.labels["quantile"] = true
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				f.labels[lp.GetName()] = true
			}
		}
	}
}

var dashDescRE = regexp.MustCompile(`^Desc\{fqName: "([^"\\]+)", .*variableLabels: \{([^}]*)\}\}$`)

// dashDescribeFamilies adds the families n's collector describes to fams,
// with the labels its descriptors declare.
func dashDescribeFamilies(t *testing.T, n *Node, fams map[string]*dashFamily) {
	t.Helper()
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		newNodeCollector(n).Describe(ch)
		close(ch)
	}()
	for d := range ch {
		m := dashDescRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("unreadable descriptor %s", d)
		}
		f := fams[m[1]]
		if f == nil {
			f = &dashFamily{labels: map[string]bool{}}
			fams[m[1]] = f
		}
		f.described = true
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				f.labels[l] = true
			}
		}
	}
}

// dashResolve finds the family a selector's name belongs to: the name itself,
// or a histogram's or summary's _bucket, _sum or _count series.
func dashResolve(fams map[string]*dashFamily, name string) (family string, f *dashFamily, suffix string) {
	if f := fams[name]; f != nil {
		return name, f, ""
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f := fams[base]; f != nil && (f.typ == "histogram" || f.typ == "summary" && suf != "_bucket") {
				return base, f, suf
			}
		}
	}
	return "", nil, ""
}

// dashCheckQueries checks every query against the families and
// returns the families queried. Families that are only described count
// for the names in dashDescribedOnly alone.
func dashCheckQueries(t *testing.T, queries []dashQuery, fams map[string]*dashFamily) (queried map[string]bool, missing []string) {
	t.Helper()
	usable := func(name string) (string, *dashFamily, string) {
		fam, f, suf := dashResolve(fams, name)
		if f == nil {
			return "", nil, ""
		}
		if !f.scraped {
			typ, ok := dashDescribedOnly[fam]
			if !ok || !f.described {
				return "", nil, ""
			}
			f.typ = typ
		}
		return fam, f, suf
	}
	queried = map[string]bool{}
	missingSet := map[string]bool{}
	for _, q := range queries {
		pq, err := parsePromQL(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		// Labels the expression may group by: those of its families and the
		// ones Prometheus adds to every target.
		available := map[string]bool{"instance": true, "job": true}
		for _, sel := range pq.selectors {
			if labels, ok := promSynthesized[sel.name]; ok {
				for _, l := range sel.labels {
					if l != "instance" && l != "job" && !slices.Contains(labels, l) {
						t.Errorf("%s: %s has no label %s", q.where, sel.name, l)
					}
				}
				for _, l := range labels {
					available[l] = true
				}
				continue
			}
			if !strings.HasPrefix(sel.name, "ssemesh_") && !strings.HasPrefix(sel.name, "go_") && !strings.HasPrefix(sel.name, "process_") {
				t.Errorf("%s: %s is not a metric of a node (ssemesh_*, go_*, process_*)", q.where, sel.name)
				continue
			}
			fam, f, suf := usable(sel.name)
			if f == nil {
				missingSet[sel.name] = true
				t.Errorf("%s: no node serves %s", q.where, sel.name)
				continue
			}
			queried[fam] = true
			for l := range f.labels {
				available[l] = true
			}
			if f.typ == "histogram" && suf == "" {
				t.Errorf("%s: %s is a histogram: query its _bucket, _sum or _count series", q.where, sel.name)
			}
			for _, l := range sel.labels {
				if !f.labels[l] && l != "instance" && l != "job" {
					t.Errorf("%s: %s has no label %s (it has %v)", q.where, fam, l, dashSortedKeys(f.labels))
				}
			}
			if promCounterFunctions[sel.fn] && f.typ != "counter" && suf == "" {
				t.Errorf("%s: %s(%s): %s is a %s, not a counter", q.where, sel.fn, sel.name, fam, f.typ)
			}
		}
		for _, l := range pq.grouping {
			if !available[l] {
				t.Errorf("%s: groups by %s, which none of its metrics carries", q.where, l)
			}
		}
		if strings.Contains(q.expr, "histogram_quantile") && !slices.Contains(pq.grouping, "le") {
			t.Errorf("%s: histogram_quantile over an aggregation that drops le", q.where)
		}
	}
	return queried, dashSortedKeys(missingSet)
}

func dashSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- real nodes

const dashJWTSecret = "dashboard-test-secret-0123456789abcdef"

func dashToken(t *testing.T) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"aud": "sse", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(dashJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dashAnswer opens url and returns the status and error code of a refusal,
// or 200 with the open client.
func dashAnswer(t *testing.T, url string, h http.Header) (int, string, *ssetest.Client) {
	t.Helper()
	c, resp, err := ssetest.DialStatus(url, h)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if c != nil {
		t.Cleanup(c.Close)
		return http.StatusOK, "", c
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get(relay.ErrorHeader), nil
}

func TestDashboardMetricsExist(t *testing.T) {
	d := loadGrafanaDashboard(t)
	queries := d.queries(t)
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}

	// Two nodes in gossip: a root with client authorization, and a leaf
	// with a two-event ring and a per-address budget of one upstream
	// request, so resuming clients run into it.
	be, addr := startBackend(t, backend.Config{})
	const brokenPath = "/dashboard/broken/sse"
	backends := []BackendSpec{
		{Name: "changelog", URI: "http://" + addr + streamPath},
		{Name: "broken", URI: "http://" + addr + brokenPath},
	}
	root := meshNode(t, meshSpec{id: "dash-root", dc: "dc1", tier: 0, static: backends}, func(c *Config) {
		c.Auth = &clientauth.Config{JWT: &clientauth.JWTConfig{HS256Secret: dashJWTSecret, Audience: "sse"}}
	})
	leaf := meshNode(t, meshSpec{id: "dash-leaf", dc: "dc1", tier: 1, seeds: []string{root.GossipAddr()}, static: backends}, func(c *Config) {
		c.Relay.RingEvents = 2
		c.Limits.PerIP = PerIPLimits{Connections: 100, NewStreams: 0.001, Burst: 1}
	})
	waitMembers(t, 2, root, leaf)
	bearer := http.Header{"Authorization": {"Bearer " + dashToken(t)}}
	rootURL, leafURL := "http://"+root.Addr(), "http://"+leaf.Addr()

	// Events delivered on both nodes: the leaf's client through the root.
	onLeaf := ssetest.Dial(t, leafURL+streamPath, nil) // spends the leaf's one new-stream token
	onRoot := ssetest.Dial(t, rootURL+streamPath, bearer)
	ssetest.Eventually(t, "clients attached", 10*time.Second, func() bool {
		return leaf.Relay().Clients() == 1 && root.Relay().Clients() == 2 // onRoot and the leaf
	})
	for i := 1; i <= 5; i++ { // one at a time: the leaf's ring holds two
		be.Publish(streamPath, 1)
		onLeaf.IDs(t, 1, 10*time.Second)
		onRoot.IDs(t, 1, 10*time.Second)
	}

	// Refusals: authorization, the per-address budget, an upstream error.
	var caused []string
	note := func(format string, args ...any) { caused = append(caused, fmt.Sprintf(format, args...)) }
	be.SetStatus(brokenPath, http.StatusNotFound, "")
	st, code, _ := dashAnswer(t, rootURL+streamPath, nil)
	note("root without a token: %d %s", st, code)
	st, code, _ = dashAnswer(t, leafURL+brokenPath, nil)
	note("leaf, a second new stream: %d %s", st, code)
	st, code, _ = dashAnswer(t, rootURL+brokenPath, bearer)
	note("root, a back end answering 404: %d %s", st, code)

	// A client resuming from an id the leaf's ring no longer holds: the
	// history fetch would be a second upstream request from its address.
	st, code, _ = dashAnswer(t, leafURL+streamPath, http.Header{"Last-Event-ID": {"1"}})
	_, ok := ssetest.Poll(5*time.Second, 10*time.Millisecond, func() bool { return leaf.Relay().Metrics().Snapshot().CatchUpRefused["client"] > 0 })
	note("leaf, resuming from event 1: %d %s, catch-up refused: %v", st, code, ok)

	// A client that left: the next writes to its socket fail.
	st, code, gone := dashAnswer(t, rootURL+streamPath, bearer)
	if gone == nil {
		note("root, a third client: %d %s", st, code)
	} else {
		ssetest.Eventually(t, "third client attached to the root", 10*time.Second, func() bool { return root.Relay().Clients() == 3 })
		gone.Close()
		_, ok = ssetest.Poll(5*time.Second, 10*time.Millisecond, func() bool {
			be.Publish(streamPath, 1)
			time.Sleep(20 * time.Millisecond)
			return root.Relay().Metrics().Snapshot().Disconnects[relay.ReasonWriteError] > 0
		})
		note("root, a client that left: write_error counted: %v", ok)
	}
	t.Logf("events caused:\n\t%s", strings.Join(caused, "\n\t"))

	fams := map[string]*dashFamily{}
	for _, n := range []*Node{root, leaf} {
		dashScrapeFamilies(t, n, fams)
	}
	dashDescribeFamilies(t, root, fams)

	queried, missing := dashCheckQueries(t, queries, fams)
	if runtime.GOOS != "linux" {
		// The process collector reports everything on Linux only.
		missing = slices.DeleteFunc(missing, func(n string) bool { return strings.HasPrefix(n, "process_") })
	}
	if len(missing) > 0 {
		t.Errorf("the dashboard queries metrics no node serves: %s", strings.Join(missing, ", "))
	}
	var described []string
	for _, name := range dashSortedKeys(queried) {
		f := fams[name]
		if !f.scraped {
			described = append(described, name)
		}
		if strings.HasPrefix(name, "ssemesh_") && !f.described {
			t.Errorf("%s is served but not described by the node's collector", name)
		}
	}
	t.Logf("%d metric families queried by %d expressions: %s", len(queried), len(queries), strings.Join(dashSortedKeys(queried), " "))
	if len(described) > 0 {
		t.Logf("found only by the collector's Describe (nothing happened for them in this test): %s", strings.Join(described, ", "))
	} else {
		t.Logf("every family queried was in a scrape; none was found only by Describe")
	}

	// The node's own families the dashboard leaves out: a hint for whoever
	// adds a metric, not a failure.
	var notShown []string
	for name, f := range fams {
		if f.described && !queried[name] {
			notShown = append(notShown, name)
		}
	}
	sort.Strings(notShown)
	t.Logf("ssemesh families not on the dashboard: %v", notShown)
}

// TestDashboardPromQLReader checks the reader the tests above rely on.
func TestDashboardPromQLReader(t *testing.T) {
	q, err := parsePromQL(`histogram_quantile(0.99, sum by (instance, node, le) (rate(ssemesh_delivery_latency_seconds_bucket{instance=~"$instance", le!="+Inf"}[$__rate_interval]) * on (instance) group_left (node) ssemesh_node_info)) > bool 0.25 or vector(0)`)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, s := range q.selectors {
		fmt.Fprintf(&got, "%s%v@%s ", s.name, s.labels, s.fn)
	}
	want := `ssemesh_delivery_latency_seconds_bucket[instance le]@rate ssemesh_node_info[]@sum `
	if got.String() != want || !slices.Equal(q.grouping, []string{"instance", "node", "le", "instance", "node"}) {
		t.Fatalf("selectors %q, grouping %v", got.String(), q.grouping)
	}
	q, err = parsePromQL(`label_values(ssemesh_node_info{dc=~"$dc"}, node)`)
	if err != nil || len(q.selectors) != 1 || q.selectors[0].name != "ssemesh_node_info" || !slices.Equal(q.grouping, []string{"node"}) {
		t.Fatalf("label_values: %+v %v", q, err)
	}
	for _, bad := range []string{`rate(x[5m]`, `ratez(x[5m])`, `{__name__="x"}`, `x{a=b}`, `x{a="b}`} {
		if _, err := parsePromQL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
