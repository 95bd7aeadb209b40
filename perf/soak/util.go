package soak

import (
	"context"
	"errors"
	"regexp"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// sleepCtx sleeps for d or until ctx ends; it tells whether the whole d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func asClientError(err error, target **client.Error) bool { return errors.As(err, target) }

// idPattern matches the soak's client ids, envelope ids and loopback ports in error texts.
var idPattern = regexp.MustCompile(`\b(soak[-_]|arq_)[A-Za-z0-9_.:-]*|127\.0\.0\.1:[0-9]+|\[::1\]:[0-9]+`)

// shortErr is err's text without ids and ports, cut to 160 bytes, so that the same failure on
// many connections makes one note.
func shortErr(err error) string {
	s := idPattern.ReplaceAllString(err.Error(), "<id>")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// pacer schedules a steady rate: each tick is due at start + n/rate. A loop that falls behind
// skips the ticks it missed instead of bursting to catch up.
type pacer struct {
	every time.Duration
	next  time.Time
}

func newPacer(rate float64) *pacer {
	return &pacer{every: time.Duration(float64(time.Second) / rate), next: time.Now()}
}

// wait sleeps until the next tick; false if ctx ended first.
func (p *pacer) wait(ctx context.Context) bool {
	p.next = p.next.Add(p.every)
	if now := time.Now(); p.next.Before(now.Add(-p.every)) {
		p.next = now // fell behind: skip, do not burst
	}
	return sleepCtx(ctx, time.Until(p.next))
}
