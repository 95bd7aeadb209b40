package fanout

import "github.com/arqonbus/arqonbus/engine"

// roster is a channel's members as they change, under the channel lock: one
// list per event loop of the members without a filter, and one list of those
// with one, each in join order. An index finds a member's slot; a leave
// leaves a hole that a later compaction closes. A join or a leave thus costs
// O(1) amortised however big the channel, and the immutable snapshots that
// publishes hand to the loops are built from the roster only when a publish
// follows a change, and then only for the lists that changed.
type roster struct {
	index    map[*engine.Conn]memberRef
	peak     int           // the index's largest size since it was last rebuilt
	groups   []*rosterList // one per loop that had members
	filtered rosterList
}

// memberRef is where a member's slot is.
type memberRef struct {
	list    int32 // index in groups; filteredList for the filtered list
	at      int32 // slot in the list
	handler bool  // the member serves commands: leaving must drop it from the handlers
}

const filteredList = -1

// rosterList is one list of members. Its conns (and, in the filtered list,
// filters) hold nil where a member left.
type rosterList struct {
	loop    *engine.Loop
	conns   []*engine.Conn
	filters []Filter // the filtered list only: each member's filter
	live    int
	dirty   bool             // changed since snap/fsnap were built
	snap    []*engine.Conn   // immutable: the last snapshot of a loop's list
	fsnap   []filteredMember // immutable: the last snapshot of the filtered list
}

// Compaction and map rebuild thresholds: small lists never bother.
const (
	compactMinHoles = 32
	rebuildMinPeak  = 1024
)

func (r *roster) has(c *engine.Conn) bool {
	_, ok := r.index[c]
	return ok
}

// add appends c (not a member) to its list.
func (r *roster) add(c *engine.Conn, f Filter, handler bool) {
	if r.index == nil {
		r.index = make(map[*engine.Conn]memberRef)
	}
	ref := memberRef{list: filteredList, handler: handler}
	l := &r.filtered
	if len(f) == 0 {
		ref.list = r.groupOf(c.Loop())
		l = r.groups[ref.list]
	}
	ref.at = int32(len(l.conns))
	l.conns = append(l.conns, c)
	if ref.list == filteredList {
		l.filters = append(l.filters, f)
	}
	l.live++
	l.dirty = true
	r.index[c] = ref
	r.peak = max(r.peak, len(r.index))
}

// groupOf returns the index of loop's list, adding one if needed. There are
// as many as event loops: a scan is cheaper than a map.
func (r *roster) groupOf(loop *engine.Loop) int32 {
	for i, l := range r.groups {
		if l.loop == loop {
			return int32(i)
		}
	}
	r.groups = append(r.groups, &rosterList{loop: loop})
	return int32(len(r.groups) - 1)
}

func (r *roster) list(i int32) *rosterList {
	if i == filteredList {
		return &r.filtered
	}
	return r.groups[i]
}

// remove takes c out and returns where it was; false when c is no member.
func (r *roster) remove(c *engine.Conn) (memberRef, bool) {
	ref, ok := r.index[c]
	if !ok {
		return ref, false
	}
	delete(r.index, c)
	l := r.list(ref.list)
	l.conns[ref.at] = nil
	if l.filters != nil {
		l.filters[ref.at] = nil
	}
	l.live--
	l.dirty = true
	if holes := len(l.conns) - l.live; holes >= compactMinHoles && holes > l.live || l.live == 0 {
		r.compact(ref.list, l)
	}
	// Maps never shrink: one that held a storm's members would keep their
	// buckets for the channel's life. Rebuilt when far below its peak (the
	// cost, O(members), is paid once per that many leaves).
	if r.peak >= rebuildMinPeak && len(r.index) < r.peak/8 {
		m := make(map[*engine.Conn]memberRef, len(r.index))
		for k, v := range r.index {
			m[k] = v
		}
		r.index, r.peak = m, len(m)
	}
	return ref, true
}

// compact closes l's holes, keeping join order, and gives back memory the
// list no longer needs. Its cost is paid for by the leaves that made the
// holes, at least as many as there are members left.
func (r *roster) compact(li int32, l *rosterList) {
	if l.live == 0 {
		l.conns, l.filters = nil, nil
		return
	}
	shrink := cap(l.conns) > 4*l.live
	conns, filters := l.conns[:0], l.filters[:0]
	if shrink {
		conns = make([]*engine.Conn, 0, 2*l.live)
		if l.filters != nil {
			filters = make([]Filter, 0, 2*l.live)
		}
	}
	for i, c := range l.conns {
		if c == nil {
			continue
		}
		r.index[c] = memberRef{list: li, at: int32(len(conns)), handler: r.index[c].handler}
		conns = append(conns, c)
		if l.filters != nil {
			filters = append(filters, l.filters[i])
		}
	}
	if !shrink {
		// Compacted in place: the tail must not keep departed members alive.
		clear(l.conns[len(conns):])
		if l.filters != nil {
			clear(l.filters[len(filters):])
		}
	}
	l.conns, l.filters = conns, filters
}

// setHandler records whether c serves commands; false when c is no member.
func (r *roster) setHandler(c *engine.Conn, handler bool) {
	if ref, ok := r.index[c]; ok && ref.handler != handler {
		ref.handler = handler
		r.index[c] = ref
	}
}

// snapshot builds the immutable member set publishes hand out, rebuilding
// only the lists that changed since the last one.
func (r *roster) snapshot() *memberSet {
	set := &memberSet{count: len(r.index)}
	for _, l := range r.groups {
		if l.dirty {
			l.snap = make([]*engine.Conn, 0, l.live)
			for _, c := range l.conns {
				if c != nil {
					l.snap = append(l.snap, c)
				}
			}
			l.dirty = false
		}
		if len(l.snap) > 0 {
			set.groups = append(set.groups, loopGroup{loop: l.loop, conns: l.snap})
		}
	}
	if l := &r.filtered; l.dirty {
		l.fsnap = make([]filteredMember, 0, l.live)
		for i, c := range l.conns {
			if c != nil {
				l.fsnap = append(l.fsnap, filteredMember{conn: c, filter: l.filters[i]})
			}
		}
		l.dirty = false
	}
	set.filtered = r.filtered.fsnap
	if len(set.groups) == 0 && len(set.filtered) == 0 {
		return emptySet
	}
	return set
}
