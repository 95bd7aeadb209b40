package fanout

import "sort"

// Filter is a member's subscription filter: it matches a message whose
// attributes hold every term's key with an equal value.
type Filter []FilterTerm

// FilterTerm is one key and its value as compact JSON text ("analytical" with
// its quotes, 5, true).
type FilterTerm struct {
	Key   string
	Value string
}

// Attrs are a message's attributes: its metadata values as compact JSON text.
type Attrs interface {
	Attr(key string) (value string, ok bool)
}

// NewFilter builds a filter from key/value pairs, in a stable order.
func NewFilter(kv map[string]string) Filter {
	if len(kv) == 0 {
		return nil
	}
	f := make(Filter, 0, len(kv))
	for k, v := range kv {
		f = append(f, FilterTerm{Key: k, Value: v})
	}
	sort.Slice(f, func(i, j int) bool { return f[i].Key < f[j].Key })
	return f
}

// Match reports whether a holds every term.
func (f Filter) Match(a Attrs) bool {
	for _, t := range f {
		if v, ok := a.Attr(t.Key); !ok || v != t.Value {
			return false
		}
	}
	return true
}
