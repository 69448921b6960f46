package replication

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSlots: IDs name their slot and a sequence; an answer for a slot
// reused since does not match; the bytes budget lets one call through
// whatever its size.
func TestSlots(t *testing.T) {
	var mu sync.Mutex
	var s slots[int]
	s.init(4, &mu)
	one, two := 1, 2
	require.False(t, s.full(1<<30, 100), "an empty table takes any call")
	id1 := s.take(&one, 60)
	require.True(t, s.full(60, 100), "the budget")
	require.False(t, s.full(40, 100))
	require.Same(t, &one, s.get(id1))
	require.True(t, s.release(id1))
	require.False(t, s.release(id1), "released once")
	id2 := s.take(&two, 10)
	require.Equal(t, id1&3, id2&3, "the slot is reused")
	require.NotEqual(t, id1, id2)
	require.Nil(t, s.get(id1), "a stale answer for the reused slot")
	require.Same(t, &two, s.get(id2))
	for range 3 {
		s.take(&one, 1)
	}
	require.True(t, s.full(1, 100), "every slot taken")
	var drained int
	s.drain(func(*int) { drained++ })
	require.Equal(t, 4, drained)
	require.Zero(t, s.out)
	require.Zero(t, s.bytes)
}
