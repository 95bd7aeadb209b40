package deploy

// deploy/prometheus and deploy/grafana: promtool accepts the config, the
// rules and their unit tests, and every metric, label and label value the
// rules and the dashboard use is one a real node (Redis storage, clustered)
// exports on /metrics.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/redistest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const (
	promConfig    = "prometheus/prometheus.yml"
	alertRules    = "prometheus/arqonbus-alerts.yml"
	alertTests    = "prometheus/arqonbus-alerts.test.yml"
	dashboardFile = "grafana/arqonbus-dashboard.json"
)

// promtoolBin finds promtool (Debian's prometheus package). Without it the
// test is skipped, or fails under CI=true, where
// scripts/install-test-deps.sh must have installed it.
func promtoolBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("promtool not found: run scripts/install-test-deps.sh")
	}
	t.Skip("promtool not found (scripts/install-test-deps.sh installs Debian's prometheus package, which has it)")
	return ""
}

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin := promtoolBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPrometheusConfig: promtool accepts prometheus.yml and the rule file it
// loads, and the rules pass their unit tests.
func TestPrometheusConfig(t *testing.T) {
	out := promtool(t, "check", "config", promConfig)
	if !strings.Contains(out, "1 rule files found") {
		t.Errorf("prometheus.yml should load arqonbus-alerts.yml:\n%s", out)
	}
	promtool(t, "check", "rules", alertRules)
	promtool(t, "test", "rules", alertTests)
}

// query is one PromQL expression of the deploy files and where it is.
type query struct {
	where, expr string
	labelValues string // for a label_values(selector, label) variable: the label
}

var (
	reAlert   = regexp.MustCompile(`^\s*- (alert|record):\s*(\S+)`)
	reExpr    = regexp.MustCompile(`^(\s*)expr:\s*(.*)$`)
	reLabelFn = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)
)

// ruleQueries reads the expr of every rule. promtool validates the file;
// this only needs the expressions, written either on the expr line or as a
// block scalar (| or >) below it.
func ruleQueries(t *testing.T) []query {
	t.Helper()
	text, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	var qs []query
	rules, name := 0, ""
	for i := 0; i < len(lines); i++ {
		if m := reAlert.FindStringSubmatch(lines[i]); m != nil {
			rules, name = rules+1, m[2]
			continue
		}
		m := reExpr.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		expr := m[2]
		if expr == "|" || expr == ">" || expr == "|-" || expr == ">-" {
			var b []string
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > len(m[1])) {
				i++
				b = append(b, lines[i])
			}
			expr = strings.Join(b, "\n")
		}
		qs = append(qs, query{where: alertRules + " " + name, expr: strings.TrimSpace(expr)})
	}
	if rules == 0 || len(qs) != rules {
		t.Fatalf("%s: %d rules but %d expressions read: keep one expr per rule, on its line or as a | block", alertRules, rules, len(qs))
	}
	return qs
}

// dashboard is the part of a Grafana dashboard model the checks read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource json.RawMessage          `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		Expr       string          `json:"expr"`
		RefID      string          `json:"refId"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardQueries reads every panel target and every query variable.
func dashboardQueries(t *testing.T, d dashboard) []query {
	t.Helper()
	var qs []query
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			qs = append(qs, query{where: fmt.Sprintf("%s panel %q %s", dashboardFile, p.Title, tg.RefID), expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if json.Unmarshal(v.Query, &s) != nil {
				t.Fatalf("variable %s: unreadable query %s", v.Name, v.Query)
			}
			q.Query = s
		}
		m := reLabelFn.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: %q is not label_values(selector, label)", v.Name, q.Query)
		}
		qs = append(qs, query{where: dashboardFile + " variable " + v.Name, expr: m[1], labelValues: m[2]})
	}
	return qs
}

// TestDashboardModel: the dashboard is a well-formed Grafana model whose
// panels all query the ${datasource} variable, and every expression is
// PromQL that promtool accepts (Grafana's variables replaced).
func TestDashboardModel(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title")
	}
	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] {
		t.Errorf("no datasource variable: the dashboard must not hard-code a data source uid")
	}
	ids := map[int]string{}
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or also used by %q", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, ds := range append([]json.RawMessage{p.Datasource}, func() (r []json.RawMessage) {
			for _, tg := range p.Targets {
				r = append(r, tg.Datasource)
			}
			return
		}()...) {
			if !bytes.Contains(ds, []byte(`"${datasource}"`)) {
				t.Errorf("panel %q: datasource %s is not ${datasource}", p.Title, ds)
			}
		}
	}
	qs := dashboardQueries(t, d)
	reVar := regexp.MustCompile(`\$\{?(\w+)\}?`)
	for _, q := range qs {
		for _, m := range reVar.FindAllStringSubmatch(q.expr, -1) {
			if !vars[m[1]] {
				t.Errorf("%s: $%s is not a dashboard variable", q.where, m[1])
			}
		}
	}

	// promtool's parser on every expression: as recording rules of a
	// throwaway rule file (JSON is YAML).
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, q := range qs {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: grafanaVars(q.expr)})
	}
	b, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := promtool(t, "check", "rules", path); !strings.Contains(out, fmt.Sprintf("%d rules found", len(qs))) {
		t.Errorf("promtool read fewer rules than the dashboard's %d queries:\n%s", len(qs), out)
	}
}

// series is what a node exports: series name (histograms as _bucket, _sum,
// _count) -> the label sets of its samples.
type series map[string][]map[string]string

func scrapeSeries(t *testing.T, body []byte) (series, map[string]*dto.MetricFamily) {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := series{}
	for name, f := range fams {
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, b := range m.GetHistogram().GetBucket() {
					bl := map[string]string{"le": fmt.Sprint(b.GetUpperBound())}
					for k, v := range labels {
						bl[k] = v
					}
					out[name+"_bucket"] = append(out[name+"_bucket"], bl)
				}
				out[name+"_sum"] = append(out[name+"_sum"], labels)
				out[name+"_count"] = append(out[name+"_count"], labels)
			case dto.MetricType_SUMMARY:
				out[name] = append(out[name], labels)
				out[name+"_sum"] = append(out[name+"_sum"], labels)
				out[name+"_count"] = append(out[name+"_count"], labels)
			default:
				out[name] = append(out[name], labels)
			}
		}
	}
	return out, fams
}

// prometheusSeries are series Prometheus makes itself for every target.
var prometheusSeries = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = map[string]bool{"job": true, "instance": true, "node": true}

// notOnDashboard lists node metrics that neither the dashboard nor the
// alerts need to show; every other arqonbus_* metric must be used by one.
var notOnDashboard = map[string]bool{}

// TestDeployQueriesUseRealMetrics starts a node with Redis storage (so it is
// clustered and exports its storage and cluster metrics), scrapes /metrics,
// and checks every selector of the alert rules and the dashboard against it.
func TestDeployQueriesUseRealMetrics(t *testing.T) {
	bin := serverBin(t)
	r := redistest.Run(t)
	n := startNode(t, []string{bin}, "ARQONBUS_STORAGE=redis", "ARQONBUS_REDIS_URL="+r.URL(), "ARQONBUS_NODE_ID=deploy-metrics")
	have, fams := scrapeSeries(t, get(t, n.httpURL("/metrics")))
	for _, want := range []string{"arqonbus_cluster_nodes", "arqonbus_storage_degraded", "arqonbus_routing_latency_seconds_bucket"} {
		if have[want] == nil {
			t.Fatalf("the node exports no %s: is it clustered with Redis storage?", want)
		}
	}

	d := readDashboard(t)
	queries := append(ruleQueries(t), dashboardQueries(t, d)...)
	used := map[string]bool{}
	for _, q := range queries {
		refs, err := parseRefs(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		if len(refs.selectors) == 0 {
			t.Errorf("%s: no metric in %q", q.where, q.expr)
		}
		// Labels the expression's metrics carry: grouping must use those.
		labels := map[string]bool{}
		for k := range targetLabels {
			labels[k] = true
		}
		for _, s := range refs.selectors {
			used[s.name] = true
			if prometheusSeries[s.name] {
				continue
			}
			got, ok := have[s.name]
			if !ok {
				t.Errorf("%s: metric %s is not exported by the node (%q)", q.where, s.name, q.expr)
				continue
			}
			for _, ls := range got {
				for k := range ls {
					labels[k] = true
				}
			}
			for _, m := range s.matchers {
				if targetLabels[m.label] {
					continue
				}
				if err := checkMatcher(got, m); err != nil {
					t.Errorf("%s: %s{%s%s%q}: %v", q.where, s.name, m.label, m.op, m.value, err)
				}
			}
		}
		for _, g := range append(refs.grouping, q.labelValues) {
			if g != "" && !labels[g] {
				t.Errorf("%s: label %q is on none of the expression's metrics (%q)", q.where, g, q.expr)
			}
		}
	}

	// Every metric the node exports is on the dashboard or in an alert.
	var missing []string
	for name, f := range fams {
		if !strings.HasPrefix(name, "arqonbus_") || notOnDashboard[name] {
			continue
		}
		if used[name] || (f.GetType() == dto.MetricType_HISTOGRAM && (used[name+"_bucket"] || used[name+"_count"])) {
			continue
		}
		missing = append(missing, name)
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics neither on %s nor in %s: %v (add a panel or an alert, or list them in notOnDashboard)", dashboardFile, alertRules, missing)
	}
}

// checkMatcher: an = matcher names a value some series has; an =~ matcher
// that is a plain alternation (A|B) names values that all exist, any other
// regexp matches some series. Negative matchers are not checked.
func checkMatcher(got []map[string]string, m matcher) error {
	var values []string
	present := false
	for _, ls := range got {
		if v, ok := ls[m.label]; ok {
			present = true
			values = append(values, v)
		}
	}
	if !present {
		return fmt.Errorf("no series has the label %s", m.label)
	}
	switch m.op {
	case "=":
		if !slices.Contains(values, m.value) {
			return fmt.Errorf("no series has %s=%q (values: %v)", m.label, m.value, values)
		}
	case "=~":
		if regexp.MustCompile(`^[A-Za-z0-9_\-|]+$`).MatchString(m.value) {
			for _, alt := range strings.Split(m.value, "|") {
				if !slices.Contains(values, alt) {
					return fmt.Errorf("no series has %s=%q (values: %v)", m.label, alt, values)
				}
			}
			return nil
		}
		re, err := regexp.Compile("^(?:" + m.value + ")$")
		if err != nil {
			return err
		}
		for _, v := range values {
			if re.MatchString(v) {
				return nil
			}
		}
		return fmt.Errorf("matches no value (values: %v)", values)
	}
	return nil
}
