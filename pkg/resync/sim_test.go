package resync

// simLink is a toy link for the controller tests: a request issued at tick
// t becomes deliverable at tick t+latency, and at most bandwidth bytes are
// delivered per tick, oldest first.
type simLink struct {
	latency   int
	bandwidth int64
	queue     []simSegment
	inFlight  int64
}

type simSegment struct {
	at int
	n  int64
}

// deliver returns the bytes that arrive at tick t.
func (l *simLink) deliver(t int) int64 {
	var got int64
	for len(l.queue) > 0 && got < l.bandwidth && l.queue[0].at+l.latency <= t {
		s := &l.queue[0]
		take := min(s.n, l.bandwidth-got)
		s.n -= take
		got += take
		if s.n == 0 {
			l.queue = l.queue[1:]
		}
	}
	l.inFlight -= got
	return got
}

func (l *simLink) send(t int, n int64) {
	if n > 0 {
		l.queue = append(l.queue, simSegment{at: t, n: n})
		l.inFlight += n
	}
}

// simRun drives c over l for ticks ticks and returns, per tick, the request
// and the bytes in flight when the controller was asked.
func simRun(c *Controller, l *simLink, ticks int) (reqs, inFlight []int64) {
	for t := range ticks {
		arrived := l.deliver(t)
		inFlight = append(inFlight, l.inFlight)
		r := c.Tick(arrived, l.inFlight)
		reqs = append(reqs, r)
		l.send(t, r)
	}
	return reqs, inFlight
}
