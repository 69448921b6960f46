package clock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFakeTickers(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	c, stop := f.NewTicker(100 * time.Millisecond)
	c2, _ := f.NewTicker(250 * time.Millisecond)

	f.Advance(99 * time.Millisecond)
	require.Empty(t, c)
	f.Advance(time.Millisecond)
	require.Equal(t, start.Add(100*time.Millisecond), <-c)

	// A reader that is behind misses ticks (capacity 1), as time.Ticker.
	f.Advance(time.Second)
	require.Equal(t, start.Add(200*time.Millisecond), <-c, "the first missed tick is kept")
	require.Empty(t, c)
	require.Equal(t, start.Add(250*time.Millisecond), <-c2)
	require.Equal(t, start.Add(1100*time.Millisecond), f.Now())

	stop()
	f.Advance(time.Second)
	require.Empty(t, c, "a stopped ticker does not fire")
	require.NotEmpty(t, c2)
}

func TestRealIsAClock(t *testing.T) {
	var c Clock = Real{}
	ch, stop := c.NewTicker(time.Millisecond)
	defer stop()
	<-ch
	require.WithinDuration(t, time.Now(), c.Now(), time.Second)
}
