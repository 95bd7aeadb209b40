package deploy

// A small PromQL reader for the tests: it finds the metric names, the label
// matchers and the grouping labels of an expression, so that the alert rules
// and the dashboard can be checked against what a real node exports.
// Syntax itself is promtool's job (prometheus_test.go runs it on every
// expression); this only has to be right about which identifiers are metrics.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// matcher is one label matcher of a selector: label op "value".
type matcher struct{ label, op, value string }

// selector is a metric name and its matchers.
type selector struct {
	name     string
	matchers []matcher
}

// queryRefs is what an expression refers to.
type queryRefs struct {
	selectors []selector
	grouping  []string // labels of by/without/on/ignoring/group_left/group_right clauses
}

// promqlKeywords are identifiers that are never metric names: aggregation
// operators (which may be followed by a by/without clause rather than "("),
// set and comparison keywords, modifiers and literals.
var promqlKeywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
	"and": true, "or": true, "unless": true, "bool": true, "atan2": true,
	"offset": true, "inf": true, "nan": true, "Inf": true, "NaN": true,
}

// groupingKeywords take a parenthesised label list.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

type token struct {
	kind string // "ident", "string", "number", "punct"
	text string
}

var (
	reIdent  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	reNumber = regexp.MustCompile(`^[0-9.][0-9a-zA-Z_.]*`) // 5m, 0.99, 1e3, 1h30m, 0x1f
	reOp     = regexp.MustCompile(`^(==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],@:])`)
)

// grafanaVars replaces Grafana's variables with something PromQL accepts:
// interval variables become a duration, others (used inside label matcher
// strings, like instance=~"$instance") match anything.
func grafanaVars(expr string) string {
	expr = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`).ReplaceAllString(expr, "5m")
	return regexp.MustCompile(`\$\{\w+\}|\$\w+`).ReplaceAllString(expr, ".*")
}

func tokenize(expr string) ([]token, error) {
	var toks []token
	s := expr
	for len(s) > 0 {
		switch c := s[0]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			s = s[1:]
		case c == '#': // comment to the end of the line
			if i := strings.IndexByte(s, '\n'); i >= 0 {
				s = s[i:]
			} else {
				s = ""
			}
		case c == '"' || c == '\'' || c == '`':
			i, val := 1, strings.Builder{}
			for ; i < len(s) && s[i] != c; i++ {
				if s[i] == '\\' && c != '`' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			toks = append(toks, token{"string", val.String()})
			s = s[i+1:]
		case reNumber.MatchString(s):
			m := reNumber.FindString(s)
			toks = append(toks, token{"number", m})
			s = s[len(m):]
		case reIdent.MatchString(s):
			m := reIdent.FindString(s)
			toks = append(toks, token{"ident", m})
			s = s[len(m):]
		case reOp.MatchString(s):
			m := reOp.FindString(s)
			toks = append(toks, token{"punct", m})
			s = s[len(m):]
		default:
			return nil, fmt.Errorf("unexpected %q in %q", s[:1], expr)
		}
	}
	return toks, nil
}

// parseRefs reads the metric selectors and grouping labels of a PromQL
// expression (Grafana variables allowed). A selector without a metric name
// ({__name__=...}) is refused: the checks need names.
func parseRefs(expr string) (queryRefs, error) {
	var refs queryRefs
	toks, err := tokenize(grafanaVars(expr))
	if err != nil {
		return refs, err
	}
	next := func(i int) token {
		if i+1 < len(toks) {
			return toks[i+1]
		}
		return token{}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == "punct" && t.text == "[":
			// A range or subquery: durations and colons only.
			for i < len(toks) && toks[i].text != "]" {
				i++
			}
		case t.kind == "punct" && t.text == "{":
			return refs, fmt.Errorf("label matchers without a metric name in %q", expr)
		case t.kind == "ident" && groupingKeywords[t.text]:
			if next(i).text != "(" {
				continue // group_left / group_right without labels
			}
			i += 2
			for ; i < len(toks) && toks[i].text != ")"; i++ {
				if toks[i].kind == "ident" {
					refs.grouping = append(refs.grouping, toks[i].text)
				}
			}
		case t.kind == "ident" && promqlKeywords[t.text]:
		case t.kind == "ident" && next(i).text == "(":
			// a function call
		case t.kind == "ident":
			sel := selector{name: t.text}
			if next(i).text == "{" {
				i += 2
				for ; i < len(toks) && toks[i].text != "}"; i++ {
					if toks[i].text == "," {
						continue
					}
					if i+2 >= len(toks) || toks[i].kind != "ident" || toks[i+1].kind != "punct" || toks[i+2].kind != "string" {
						return refs, fmt.Errorf("cannot read the label matchers of %s in %q", t.text, expr)
					}
					sel.matchers = append(sel.matchers, matcher{toks[i].text, toks[i+1].text, toks[i+2].text})
					i += 2
				}
				if i >= len(toks) {
					return refs, fmt.Errorf("unclosed { after %s in %q", t.text, expr)
				}
			}
			refs.selectors = append(refs.selectors, sel)
		}
	}
	return refs, nil
}

// TestParseRefs pins the reader on the shapes the deploy files use.
func TestParseRefs(t *testing.T) {
	for _, c := range []struct {
		expr     string
		names    []string
		matchers []string // "name:label op value"
		grouping []string
	}{
		{expr: `up{job="arqonbus"} == 0`, names: []string{"up"}, matchers: []string{`up:job="arqonbus"`}},
		{
			expr:     "histogram_quantile(0.99,\n  sum by (instance, le) (rate(arqonbus_routing_latency_seconds_bucket[5m]))\n) > 0.05",
			names:    []string{"arqonbus_routing_latency_seconds_bucket"},
			grouping: []string{"instance", "le"},
		},
		{
			expr:     `sum(rate(x_total{code=~"A|B", instance=~"$instance"}[$__rate_interval])) by (code) / ignoring(code) group_left sum(y)`,
			names:    []string{"x_total", "y"},
			matchers: []string{`x_total:code=~"A|B"`, `x_total:instance=~".*"`},
			grouping: []string{"code", "code"},
		},
		{
			expr:  `arqonbus_ready == 0 and arqonbus_draining == 0 or max without (instance) (rate(a[1h30m] offset 5m)) * 60`,
			names: []string{"arqonbus_ready", "arqonbus_draining", "a"}, grouping: []string{"instance"},
		},
		{expr: `min(arqonbus_cluster_nodes) < count(up{job="arqonbus"} == 1)`, names: []string{"arqonbus_cluster_nodes", "up"}, matchers: []string{`up:job="arqonbus"`}},
		{expr: `label_replace(m{a!="x"}, "dst", "$1", "src", "(.*)")`, names: []string{"m"}, matchers: []string{`m:a!="x"`}},
		{expr: `topk(5, sum by (type) (arqonbus_clients)) > bool 1e3`, names: []string{"arqonbus_clients"}, grouping: []string{"type"}},
		{expr: `changes(process_start_time_seconds{job="arqonbus"}[15m:1m]) > 2`, names: []string{"process_start_time_seconds"}, matchers: []string{`process_start_time_seconds:job="arqonbus"`}},
	} {
		refs, err := parseRefs(c.expr)
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		var names, matchers []string
		for _, s := range refs.selectors {
			names = append(names, s.name)
			for _, m := range s.matchers {
				matchers = append(matchers, fmt.Sprintf("%s:%s%s%q", s.name, m.label, m.op, m.value))
			}
		}
		if fmt.Sprint(names) != fmt.Sprint(c.names) || fmt.Sprint(matchers) != fmt.Sprint(c.matchers) || fmt.Sprint(refs.grouping) != fmt.Sprint(c.grouping) {
			t.Errorf("%q:\n got names %v matchers %v grouping %v\nwant names %v matchers %v grouping %v",
				c.expr, names, matchers, refs.grouping, c.names, c.matchers, c.grouping)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `x{a="b"`, `x{a=~}`, `"open`} {
		if _, err := parseRefs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
