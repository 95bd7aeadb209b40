package bus

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// jobs runs work that waits on Redis off the event loops: claims and releases of client ids, and the
// views this node gives others. Jobs with the same key (a client id) run in order, one at a time, on one
// worker: a release never overtakes the claim before it.
type jobs struct {
	// guard, deferred around each job, keeps a panic in one from ending the worker (and the process).
	guard  func(where string)
	seed   maphash.Seed
	shards []*jobShard
	limit  int64
	queued atomic.Int64
	wg     sync.WaitGroup
	quit   chan struct{}
}

type jobShard struct {
	mu   sync.Mutex
	q    []func()
	kick chan struct{}
}

func newJobs(workers, limit int, guard func(where string)) *jobs {
	j := &jobs{guard: guard, seed: maphash.MakeSeed(), limit: int64(limit), quit: make(chan struct{})}
	for range workers {
		sh := &jobShard{kick: make(chan struct{}, 1)}
		j.shards = append(j.shards, sh)
		j.wg.Add(1)
		go j.work(sh)
	}
	return j
}

// submit queues fn behind the other jobs of key. Beyond the limit it refuses (false), unless must.
func (j *jobs) submit(key string, must bool, fn func()) bool {
	if j.queued.Add(1) > j.limit && !must {
		j.queued.Add(-1)
		return false
	}
	sh := j.shards[maphash.String(j.seed, key)%uint64(len(j.shards))]
	sh.mu.Lock()
	sh.q = append(sh.q, fn)
	first := len(sh.q) == 1
	sh.mu.Unlock()
	if first {
		select {
		case sh.kick <- struct{}{}:
		default:
		}
	}
	return true
}

func (j *jobs) work(sh *jobShard) {
	defer j.wg.Done()
	for {
		sh.mu.Lock()
		var fn func()
		if len(sh.q) > 0 {
			fn = sh.q[0]
			sh.q[0] = nil
			sh.q = sh.q[1:]
		}
		sh.mu.Unlock()
		if fn == nil {
			select {
			case <-sh.kick:
				continue
			case <-j.quit:
				return
			}
		}
		j.queued.Add(-1)
		j.run(fn)
	}
}

// run runs one job; a panic in it ends that job only.
func (j *jobs) run(fn func()) {
	defer j.guard("cluster job")
	fn()
}

// stop ends the workers once their queues are empty (what is queued still runs), or returns when ctx
// ends, leaving them to finish.
func (j *jobs) stop(ctx context.Context) {
	close(j.quit)
	done := make(chan struct{})
	go func() { j.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
