package quorum

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twinblock/twinblock/pkg/fsm"
)

// NodeID names a host: the NAME of its `on NAME { }` section.
type NodeID string

// DataNode is what the quorum knows of one data node of a resource.
type DataNode struct {
	Disk    fsm.DiskState `json:"disk"`    // as last reported
	Current uint64        `json:"current"` // its current generation identifier, as last reported
	// Outdated: this node may lack acknowledged writes (its peer was
	// allowed to go on alone, or it left); it is never promoted until a
	// resync makes it UpToDate again (PeerUpToDate), or by force.
	Outdated bool `json:"outdated"`
}

// Resource is the replicated state of one resource.
type Resource struct {
	Epoch   uint64               `json:"epoch"`   // raised by each granted promotion
	Primary NodeID               `json:"primary"` // "" when none
	Nodes   map[NodeID]*DataNode `json:"nodes"`   // the two data nodes
}

// Peer returns the other data node of n.
func (r *Resource) Peer(n NodeID) NodeID {
	for id := range r.Nodes {
		if id != n {
			return id
		}
	}
	return ""
}

// Clone returns a deep copy.
func (r *Resource) Clone() *Resource {
	c := &Resource{Epoch: r.Epoch, Primary: r.Primary, Nodes: make(map[NodeID]*DataNode, len(r.Nodes))}
	for id, d := range r.Nodes {
		dd := *d
		c.Nodes[id] = &dd
	}
	return c
}

// State is the replicated state of every resource of one quorum group.
type State struct {
	Resources map[string]*Resource `json:"resources"`
}

// NewState returns the initial state: for each resource its two data
// nodes, nothing reported, nobody Primary, epoch 0. Every member starts
// from the same one (the configuration) and applies the same log.
func NewState(resources map[string][2]NodeID) (*State, error) {
	s := &State{Resources: make(map[string]*Resource, len(resources))}
	for name, nodes := range resources {
		if nodes[0] == "" || nodes[1] == "" || nodes[0] == nodes[1] {
			return nil, fmt.Errorf("quorum: resource %s: two distinct data nodes are needed, have %q and %q", name, nodes[0], nodes[1])
		}
		s.Resources[name] = &Resource{Nodes: map[NodeID]*DataNode{nodes[0]: {}, nodes[1]: {}}}
	}
	return s, nil
}

// Clone returns a deep copy (a snapshot's).
func (s *State) Clone() *State {
	c := &State{Resources: make(map[string]*Resource, len(s.Resources))}
	for name, r := range s.Resources {
		c.Resources[name] = r.Clone()
	}
	return c
}

// Marshal encodes the state (the snapshot format).
func (s *State) Marshal() ([]byte, error) { return json.Marshal(s) }

// Unmarshal decodes a state Marshal wrote, and checks it.
func Unmarshal(b []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("quorum: snapshot: %w", err)
	}
	if s.Resources == nil {
		s.Resources = map[string]*Resource{}
	}
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("quorum: snapshot: %w", err)
	}
	return &s, nil
}

// Check verifies the invariants that hold in any single state (the
// ones about sequences are the property test's).
func (s *State) Check() error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(s.Resources)) {
		r := s.Resources[name]
		if len(r.Nodes) != 2 {
			errs = append(errs, fmt.Errorf("resource %s: %d data nodes, want 2", name, len(r.Nodes)))
			continue
		}
		for id, d := range r.Nodes {
			if d == nil {
				errs = append(errs, fmt.Errorf("resource %s: node %s has no entry", name, id))
			}
		}
		if r.Primary != "" && r.Nodes[r.Primary] == nil {
			errs = append(errs, fmt.Errorf("resource %s: Primary %s is not a data node", name, r.Primary))
		}
		if r.Primary != "" && r.Epoch == 0 {
			errs = append(errs, fmt.Errorf("resource %s: Primary %s at epoch 0", name, r.Primary))
		}
	}
	return errors.Join(errs...)
}
