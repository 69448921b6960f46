package harness

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Proxy is the peer link's man in the middle. Node a dials b (its name
// sorts first) and b accepts connections from a's host only, so the proxy
// listens where a's configuration says b is and, for each connection,
// dials b's real address from a's host.
//
// Faults: Cut closes every connection (FIN) and refuses new ones until
// Heal; Reset aborts every connection with an RST and lets new ones
// through; Blackhole stops forwarding in both directions (the bytes wait
// in the proxy and in the sockets' buffers; new connections are accepted
// but not forwarded) until Heal; SetDelay holds every chunk for d before
// forwarding it (a delay line: throughput is kept, latency added).
type Proxy struct {
	ln     net.Listener
	target string
	from   *net.TCPAddr

	mu     sync.Mutex
	cut    bool
	closed bool
	delay  time.Duration
	gate   chan struct{} // closed while traffic flows; open during a black hole
	links  map[*link]struct{}
	wg     sync.WaitGroup
}

type link struct {
	down, up net.Conn
	once     sync.Once
	done     chan struct{}
}

// close ends both sides, with an RST when abort.
func (l *link) close(abort bool) {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.down, l.up} {
			if c == nil {
				continue
			}
			if tc, ok := c.(*net.TCPConn); ok && abort {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
		close(l.done)
	})
}

// NewProxy listens on host:0 and forwards to target, dialing from fromIP.
func NewProxy(host, target, fromIP string) (*Proxy, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, err
	}
	gate := make(chan struct{})
	close(gate)
	p := &Proxy{ln: ln, target: target, from: &net.TCPAddr{IP: net.ParseIP(fromIP)}, gate: gate, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is where the proxy listens (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		l := &link{down: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.cut || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.run(l)
	}
}

// open returns a channel that is closed while traffic may flow.
func (p *Proxy) open() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gate
}

func (p *Proxy) currentDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

func (p *Proxy) run(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close(false)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	select { // a black hole swallows the SYN too
	case <-p.open():
	case <-l.done:
		return
	}
	d := net.Dialer{LocalAddr: p.from, Timeout: 5 * time.Second}
	up, err := d.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	select {
	case <-l.done: // cut or reset while dialing
		p.mu.Unlock()
		_ = up.Close()
		return
	default:
	}
	l.up = up
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(l, l.down, up) }()
	go func() { defer wg.Done(); p.pump(l, up, l.down) }()
	wg.Wait()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pump forwards src to dst through a delay line, holding it during a
// black hole. Either side ending ends the link.
func (p *Proxy) pump(l *link, src, dst net.Conn) {
	q := make(chan chunk, 256)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				select {
				case q <- chunk{b[:n], time.Now().Add(p.currentDelay())}:
				case <-l.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer l.close(false)
	for c := range q {
		if w := time.Until(c.due); w > 0 {
			t := time.NewTimer(w)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
		}
		select {
		case <-p.open():
		case <-l.done:
			return
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}

// Cut closes every connection and refuses new ones until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for l := range p.links {
		l.close(false)
	}
}

// Reset aborts every connection with an RST; new ones go through.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.close(true)
	}
}

// Blackhole stops all forwarding until Heal.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

// SetDelay holds every chunk for d before forwarding it.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Heal ends a cut, a black hole and a delay.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut, p.delay = false, 0
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// Links is the number of connections the proxy carries.
func (p *Proxy) Links() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for l := range p.links {
		l.close(false)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}
