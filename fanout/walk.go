package fanout

// WalkChannels calls fn for every channel, in no particular order, without
// copying or sorting the hub's list (Channels does both): for answers that
// keep a few channels of many. fn runs under a shard's read lock, so it may
// read a channel's counters but must not call the hub or lock a channel.
func (h *Hub) WalkChannels(fn func(*Channel)) {
	for i := range h.chans {
		sh := &h.chans[i]
		sh.mu.RLock()
		for _, ch := range sh.m {
			fn(ch)
		}
		sh.mu.RUnlock()
	}
}
