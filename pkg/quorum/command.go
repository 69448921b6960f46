package quorum

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twinblock/twinblock/pkg/fsm"
)

// Op is what a Command asks for.
type Op uint8

// The commands.
const (
	// OpReport records Node's disk state and current generation
	// identifier. It is the only command without a compare-and-set: it
	// states a fact and grants nothing (it never clears Outdated).
	OpReport Op = iota + 1
	// OpPromote names Node Primary and raises the epoch.
	OpPromote
	// OpDemote: Node, the Primary, is no longer.
	OpDemote
	// OpOutdatePeer: Node, the Primary, goes on without its peer, which
	// becomes Outdated (twinblock's fence-peer: a committed entry
	// instead of a handler script).
	OpOutdatePeer
	// OpPeerUpToDate: Node, the Primary or with no Primary, finished a
	// resync as source; its peer is UpToDate and no longer Outdated.
	OpPeerUpToDate
	// OpLeave: Node, not Primary, goes down cleanly; while there is a
	// Primary it becomes Outdated (DRBD 9's graceful outdate), so the
	// Primary need not fence it.
	OpLeave
)

var opNames = map[Op]string{OpReport: "report", OpPromote: "promote", OpDemote: "demote",
	OpOutdatePeer: "outdate-peer", OpPeerUpToDate: "peer-up-to-date", OpLeave: "leave"}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Command is one entry of the replicated log.
type Command struct {
	Op       Op     `json:"op"`
	Resource string `json:"resource"`
	Node     NodeID `json:"node"`   // the issuer, and the node the command is about
	Expect   uint64 `json:"expect"` // the epoch the issuer saw (compare-and-set)
	// Force: primary --force (promotes an Outdated or not UpToDate
	// node, as the administrator chose).
	Force bool `json:"force,omitempty"`
	// Takeover: the leader found the current Primary gone (its bound
	// passed, see the raft node); the promotion replaces it and marks it
	// Outdated.
	Takeover bool          `json:"takeover,omitempty"`
	Disk     fsm.DiskState `json:"disk,omitempty"`    // OpReport
	Current  uint64        `json:"current,omitempty"` // OpReport
}

func (c Command) String() string {
	return fmt.Sprintf("%s %s by %s at epoch %d", c.Op, c.Resource, c.Node, c.Expect)
}

// Marshal encodes c for the log.
func (c Command) Marshal() ([]byte, error) { return json.Marshal(c) }

// UnmarshalCommand decodes a log entry.
func UnmarshalCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("quorum: log entry: %w", err)
	}
	if _, ok := opNames[c.Op]; !ok {
		return Command{}, fmt.Errorf("quorum: log entry: unknown op %d", uint8(c.Op))
	}
	return c, nil
}

// Result is what applying a Command gave: Err is nil if it was granted;
// After is the resource's state after it either way, so that a client
// retrying after a lost leadership sees whether its first try took
// effect (Granted) without another round trip.
type Result struct {
	Err   error
	After Resource
}

// The reasons a command is refused.
var (
	ErrUnknownResource  = errors.New("quorum: unknown resource")
	ErrStaleEpoch       = errors.New("quorum: stale epoch (the state changed since it was read)")
	ErrNotDataNode      = errors.New("quorum: not a data node of the resource (a witness is never Primary)")
	ErrOutdated         = errors.New("quorum: the node is Outdated: it may lack acknowledged writes")
	ErrNotUpToDate      = errors.New("quorum: the node did not report an UpToDate disk")
	ErrPrimaryElsewhere = errors.New("quorum: another node is Primary")
	ErrNotPrimary       = errors.New("quorum: the node is not Primary")
	ErrIsPrimary        = errors.New("quorum: the node is Primary")
)

// Granted reports whether c took effect, from the state after a try
// whose answer was lost (raft's ErrLeadershipLost): the retry is refused
// by the compare-and-set if the first try committed, and this tells the
// two apart.
func Granted(c Command, after Resource) bool {
	switch c.Op {
	case OpPromote:
		// (A node already Primary is granted without a new epoch.)
		return after.Primary == c.Node && (after.Epoch == c.Expect+1 || after.Epoch == c.Expect)
	case OpDemote:
		return after.Epoch == c.Expect && after.Primary != c.Node
	case OpOutdatePeer:
		p := after.Nodes[after.Peer(c.Node)]
		return after.Epoch == c.Expect && after.Primary == c.Node && p != nil && p.Outdated
	case OpPeerUpToDate:
		p := after.Nodes[after.Peer(c.Node)]
		return after.Epoch == c.Expect && p != nil && !p.Outdated
	case OpLeave:
		n := after.Nodes[c.Node]
		return after.Epoch == c.Expect && after.Primary != c.Node && n != nil && (n.Outdated || after.Primary == "")
	case OpReport:
		n := after.Nodes[c.Node]
		return n != nil && n.Disk == c.Disk && n.Current == c.Current
	}
	return false
}
