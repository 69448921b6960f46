package raftnode

import (
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/twinblock/twinblock/pkg/quorum"
)

// raftFSM is raft's view of quorum.State: Apply decodes an entry and
// applies it; a snapshot is the state's JSON.
type raftFSM struct {
	mu      sync.Mutex
	initial *quorum.State // from the configuration: what Restore of nothing means
	state   *quorum.State
}

// Apply implements raft.FSM. A log entry that does not decode is
// refused like a command (every member refuses it the same way).
func (f *raftFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := quorum.UnmarshalCommand(l.Data)
	if err != nil {
		return quorum.Result{Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Apply(c)
}

func (f *raftFSM) view(resource string) (quorum.Resource, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.state.Resources[resource]
	if r == nil {
		return quorum.Resource{}, false
	}
	return *r.Clone(), true
}

// primary is the Primary of the first resource, by name, that has one
// ("" if none).
func (f *raftFSM) primary() quorum.NodeID {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(f.state.Resources)) {
		if p := f.state.Resources[name].Primary; p != "" {
			return p
		}
	}
	return ""
}

// Snapshot implements raft.FSM.
func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := f.state.Marshal()
	if err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

// Restore implements raft.FSM: the snapshot's resources, over the
// configuration's (a resource added to the configuration since starts
// fresh).
func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	s, err := quorum.Unmarshal(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	next := f.initial.Clone()
	for name, r := range s.Resources {
		next.Resources[name] = r
	}
	f.state = next
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapshot) Release() {}
