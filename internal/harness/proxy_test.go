package harness

import (
	"io"
	"net"
	"testing"
	"time"
)

// echo serves an echo on 127.0.0.2:0.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, within time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(within))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	b := make([]byte, 4)
	_, err := io.ReadFull(c, b)
	return err
}

func TestProxyFaults(t *testing.T) {
	p, err := NewProxy("127.0.0.2", echo(t), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial()
	if err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatal("pass:", err)
	}

	p.SetDelay(200 * time.Millisecond)
	t0 := time.Now()
	if err := roundTrip(c, 2*time.Second); err != nil || time.Since(t0) < 400*time.Millisecond {
		t.Fatalf("delay: %v after %v (two 200 ms hops)", err, time.Since(t0))
	}
	p.Heal()

	p.Blackhole()
	if err := roundTrip(c, 300*time.Millisecond); err == nil {
		t.Fatal("black hole: an answer came through")
	}
	p.Heal() // the held bytes flow: the echo of the first ping, then a fresh one
	b := make([]byte, 4)
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal("after the black hole:", err)
	}
	if err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatal("after the black hole:", err)
	}

	p.Reset()
	if err := roundTrip(c, 2*time.Second); err == nil {
		t.Fatal("reset: the connection survived")
	}
	c = dial()
	if err := roundTrip(c, 2*time.Second); err != nil {
		t.Fatal("a new connection after a reset:", err)
	}

	p.Cut()
	if err := roundTrip(c, 2*time.Second); err == nil {
		t.Fatal("cut: the connection survived")
	}
	if err := roundTrip(dial(), 2*time.Second); err == nil {
		t.Fatal("cut: a new connection went through")
	}
	p.Heal()
	if err := roundTrip(dial(), 2*time.Second); err != nil {
		t.Fatal("healed:", err)
	}
}
