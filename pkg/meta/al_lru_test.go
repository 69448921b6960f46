package meta

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// order walks l both ways, checks that the links agree and returns the
// extents from head to tail.
func (l *alLRU) order(t *testing.T) []uint32 {
	t.Helper()
	var fwd []uint32
	var last *alEntry
	for e := l.head; e != nil; e = e.next {
		require.True(t, e.inLRU, "extent %d linked but not marked", e.extent)
		require.Same(t, last, e.prev, "extent %d: prev", e.extent)
		fwd = append(fwd, e.extent)
		last = e
	}
	require.Same(t, last, l.tail)
	require.Len(t, fwd, l.Len())
	return fwd
}

func TestALLRU(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []int // extent k >= 0: push k; -k-1: remove k
		want []uint32
	}{
		{"empty", nil, nil},
		{"one", []int{1}, []uint32{1}},
		{"in push order", []int{1, 2, 3}, []uint32{1, 2, 3}},
		{"remove the head", []int{1, 2, 3, -2}, []uint32{2, 3}},
		{"remove the tail", []int{1, 2, 3, -4}, []uint32{1, 2}},
		{"remove the middle", []int{1, 2, 3, -3}, []uint32{1, 3}},
		{"remove the only one", []int{1, -2}, nil},
		{"a re-push goes to the tail", []int{1, 2, 3, -2, 1}, []uint32{2, 3, 1}},
		{"empty, then refilled", []int{1, 2, -2, -3, 3, 2}, []uint32{3, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l alLRU
			ents := map[uint32]*alEntry{}
			get := func(k uint32) *alEntry {
				if ents[k] == nil {
					ents[k] = &alEntry{extent: k}
				}
				return ents[k]
			}
			for _, op := range tc.ops {
				if op >= 0 {
					l.pushBack(get(uint32(op)))
				} else {
					e := get(uint32(-op - 1))
					l.remove(e)
					assert.False(t, e.inLRU)
					assert.Nil(t, e.prev)
					assert.Nil(t, e.next)
				}
			}
			assert.Equal(t, tc.want, l.order(t))
		})
	}
}

// A write to an extent already in the activity log costs no allocation:
// every write moves its extents out of the LRU list and back. (`make
// unit` runs the DoesNotAllocate tests without -race.)
func TestBeginWriteHotExtentDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	d, _ := newInternal(t, 64<<20, 67)
	m, err := Open(d, InternalPlacement, Options{Name: "d"})
	require.NoError(t, err)
	defer m.Close()
	for e := int64(0); e < 4; e++ { // in the log, committed
		require.NoError(t, m.BeginWrite(e*ExtentSize, 4096))
		m.EndWrite(e*ExtentSize, 4096)
	}
	i := int64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		off := (i%4)*ExtentSize + 8192
		i++
		if err := m.BeginWrite(off, 4096); err != nil {
			t.Fatal(err)
		}
		m.EndWrite(off, 4096)
	})
	assert.Zero(t, allocs)
}
