package commands

import (
	"container/heap"
	"slices"
)

// Best keeps the n best of the values it is offered (better decides), in
// O(n) memory and O(log n) per offer: for answers that list a bounded page
// of a list that may be long, without sorting all of it.
type Best[T any] struct {
	n      int
	better func(a, b T) bool
	h      worstFirst[T]
}

// NewBest keeps the n best values by better (a strict order: better(a, b)
// means a comes before b).
func NewBest[T any](n int, better func(a, b T) bool) *Best[T] {
	return &Best[T]{n: n, better: better, h: worstFirst[T]{better: better}}
}

// Offer considers v.
func (b *Best[T]) Offer(v T) {
	switch {
	case b.n <= 0:
	case len(b.h.items) < b.n:
		heap.Push(&b.h, v)
	case b.better(v, b.h.items[0]):
		b.h.items[0] = v
		heap.Fix(&b.h, 0)
	}
}

// Sorted returns the values kept, best first.
func (b *Best[T]) Sorted() []T {
	out := slices.Clone(b.h.items)
	slices.SortFunc(out, func(x, y T) int {
		switch {
		case b.better(x, y):
			return -1
		case b.better(y, x):
			return 1
		}
		return 0
	})
	return out
}

// worstFirst is a heap whose root is the worst value kept.
type worstFirst[T any] struct {
	items  []T
	better func(a, b T) bool
}

func (h *worstFirst[T]) Len() int           { return len(h.items) }
func (h *worstFirst[T]) Less(i, j int) bool { return h.better(h.items[j], h.items[i]) }
func (h *worstFirst[T]) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *worstFirst[T]) Push(x any)         { h.items = append(h.items, x.(T)) }
func (h *worstFirst[T]) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
