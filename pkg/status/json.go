package status

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The JSON form, modelled on `drbdsetup status --json` (drbd-utils
// user/v9/drbdsetup.c: resource_status_json, device_status_json,
// connection_status_json, peer_device_status_json). Field names are DRBD 9's
// wherever DRBD has the field; twinblock's own fields live under the
// "twinblock" key of each resource. Fields DRBD has but twinblock cannot
// fill truthfully are left out rather than faked (doc.go lists them).
// Sizes and counters are in KiB, as DRBD's (its sectors/2), except where a
// name says otherwise.

// JSONResource is one element of the top-level array.
type JSONResource struct {
	Name             string           `json:"name"`
	NodeID           int              `json:"node-id"` // the place of this host's on section (0, 1)
	Role             string           `json:"role"`
	Suspended        bool             `json:"suspended"`
	SuspendedUser    bool             `json:"suspended-user"`    // suspend-io
	SuspendedNoData  bool             `json:"suspended-no-data"` // never: on-no-data-accessible is io-error
	SuspendedFencing bool             `json:"suspended-fencing"` // never: no fencing handler
	SuspendedQuorum  bool             `json:"suspended-quorum"`  // on-no-quorum suspend-io, out of quorum
	ForceIOFailures  bool             `json:"force-io-failures"`
	WriteOrdering    string           `json:"write-ordering"` // none, drain, flush, barrier
	Devices          []JSONDevice     `json:"devices"`
	Connections      []JSONConnection `json:"connections"`
	Twinblock        JSONTwinblock    `json:"twinblock"`
}

// JSONDevice is the resource's one volume.
type JSONDevice struct {
	Volume       int    `json:"volume"` // always 0
	Minor        int    `json:"minor"`
	DiskState    string `json:"disk-state"`
	Client       bool   `json:"client"` // intentionally diskless: never in twinblock
	Open         bool   `json:"open"`   // an NBD client is connected
	Quorum       bool   `json:"quorum"` // this node is in its group's majority; true without quorum, as DRBD with quorum off
	Size         uint64 `json:"size"`   // KiB
	Read         uint64 `json:"read"`   // KiB
	Written      uint64 `json:"written"`
	ALWrites     uint64 `json:"al-writes"`
	BMWrites     uint64 `json:"bm-writes"`
	UpperPending int64  `json:"upper-pending"` // ap: application requests in flight
	LowerPending int64  `json:"lower-pending"` // lo: local disk requests in flight
}

// JSONConnection is the link to the peer. SplitBrain and SplitBrainRule are
// twinblock's own (drbdsetup has no such field), kept here rather than under
// "twinblock" because a split brain belongs to one connection: both appear
// only while an unresolved split brain is reported, the rule only when it
// is known (not 0).
type JSONConnection struct {
	Name            string           `json:"name"`                       // the peer's node name
	PeerNodeID      int              `json:"peer-node-id"`               // the place of its on section (0, 1)
	ConnectionState string           `json:"connection-state"`           // DRBD 9 name, see DRBD9Conn
	SplitBrain      bool             `json:"split-brain,omitempty"`      // twinblock's own: unresolved split brain
	SplitBrainRule  int              `json:"split-brain-rule,omitempty"` // the drbd_uuid_compare rule that found it
	Congested       bool             `json:"congested"`
	APInFlight      int64            `json:"ap-in-flight"` // sectors (512 B), as DRBD: application writes sent, not yet acknowledged
	RSInFlight      int64            `json:"rs-in-flight"` // sectors: resync requested, not yet arrived
	PeerRole        string           `json:"peer-role"`
	TLS             bool             `json:"tls"`
	Paths           []JSONPath       `json:"paths"`
	PeerDevices     []JSONPeerDevice `json:"peer_devices"` // sic: DRBD's underscore
}

// JSONPath is the address pair of the connection.
type JSONPath struct {
	ThisHost    JSONHost `json:"this_host"`
	RemoteHost  JSONHost `json:"remote_host"`
	Established bool     `json:"established"`
}

// JSONHost is one end of a path. An address that is not "ip:port" keeps its
// text in Address, with Port 0 and Family "unknown".
type JSONHost struct {
	Address string `json:"address"`
	Port    int    `json:"port"`
	Family  string `json:"family"` // ipv4, ipv6, unknown
}

// JSONPeerDevice is the peer's view of the volume. The rs-*, want, db*/dt*,
// estimated-seconds-to-finish and percent-resync-done fields are present
// exactly when has-sync-details is true; ov-left only during a verify.
type JSONPeerDevice struct {
	Volume                 int     `json:"volume"`
	ReplicationState       string  `json:"replication-state"`
	PeerDiskState          string  `json:"peer-disk-state"`
	PeerClient             bool    `json:"peer-client"`
	ResyncSuspended        string  `json:"resync-suspended"` // no, or user,peer,dependency
	Received               uint64  `json:"received"`         // KiB
	Sent                   uint64  `json:"sent"`             // KiB
	OutOfSync              uint64  `json:"out-of-sync"`      // KiB
	PercentInSync          float64 `json:"percent-in-sync"`  // of the device's size (100 when the size is unknown and nothing is out of sync)
	Pending                int64   `json:"pending"`
	Unacked                int64   `json:"unacked"`
	HasSyncDetails         bool    `json:"has-sync-details"`
	HasOnlineVerifyDetails bool    `json:"has-online-verify-details"`

	RSTotal                  *uint64  `json:"rs-total,omitempty"`       // sectors (512 B)
	RSDt1Ms                  *int64   `json:"rs-dt1-ms,omitempty"`      // recent window
	RSDb1Sectors             *uint64  `json:"rs-db1-sectors,omitempty"` // done in it
	OVLeft                   *uint64  `json:"ov-left,omitempty"`        // sectors
	Want                     *float64 `json:"want,omitempty"`           // MiB/s, 0 = none
	DB1DT1                   *float64 `json:"db1/dt1 [MiB/s],omitempty"`
	EstimatedSecondsToFinish *float64 `json:"estimated-seconds-to-finish,omitempty"`
	DBDT                     *float64 `json:"db/dt [MiB/s],omitempty"`
	PercentResyncDone        *float64 `json:"percent-resync-done,omitempty"`
}

// JSONTwinblock holds what twinblock reports beyond DRBD's fields.
type JSONTwinblock struct {
	Node       string        `json:"node"`        // this node's name
	CState     string        `json:"cstate"`      // the DRBD 8.4 connection state, as /proc/drbd's cs:
	Protocol   string        `json:"protocol"`    // A, B, C, or "" without a net config
	NBDClients int           `json:"nbd-clients"` // open NBD sessions
	Epochs     int64         `json:"epochs"`      // /proc/drbd's ep: (DRBD's barrier epochs, not the quorum's)
	Sync       *JSONSyncInfo `json:"sync,omitempty"`
	// Quorum is the quorum group's view (quorum resources only); its
	// epoch is the quorum epoch, raised by each promotion.
	Quorum *JSONQuorum `json:"quorum,omitempty"`
	// KernelDevice is the configured kernel NBD device (device
	// /dev/nbdN; absent without one), KernelAttached whether this
	// node's export is attached to it now, KernelError why the last
	// attach failed.
	KernelDevice   string `json:"kernel-device,omitempty"`
	KernelAttached bool   `json:"kernel-attached,omitempty"`
	KernelError    string `json:"kernel-error,omitempty"`
}

// JSONQuorum is a quorum resource's view of its group.
type JSONQuorum struct {
	Quorum   bool   `json:"quorum"`
	Epoch    uint64 `json:"epoch"`
	Primary  string `json:"primary"`  // "" none
	Leader   string `json:"leader"`   // "" unknown
	Outdated bool   `json:"outdated"` // this node, in the group
}

// JSONSyncInfo is the resync or verify progress exactly as the daemon
// measured it, in bytes and milliseconds, for tools that want more precision
// than DRBD's fields carry.
type JSONSyncInfo struct {
	Verify         bool   `json:"verify"`
	TotalBytes     uint64 `json:"total-bytes"`
	LeftBytes      uint64 `json:"left-bytes"`
	ElapsedMs      int64  `json:"elapsed-ms"` // paused time excluded
	RecentBytes    uint64 `json:"recent-bytes"`
	RecentWindowMs int64  `json:"recent-window-ms"`
	Stalled        bool   `json:"stalled"`
	WantKiBps      uint64 `json:"want-kibps"`
}

// noEstimate is drbdsetup's estimated-seconds-to-finish when nothing moved in
// the recent window.
const noEstimate = 987654321

// WriteJSON writes the resources that are up as a JSON array modelled on
// `drbdsetup status --json`, in name order, indented by two spaces and
// ended by a newline. Resources that are not up are left out, as drbdsetup
// leaves out what the kernel does not know; no resource gives "[]".
func WriteJSON(w io.Writer, rs []Resource) error {
	out := make([]JSONResource, 0, len(rs))
	for _, r := range byName(rs) {
		if r.Configured {
			out = append(out, jsonResource(r))
		}
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("status: encoding JSON: %w", err)
	}
	return flush(w, "JSON status", string(data)+"\n")
}

func jsonResource(r Resource) JSONResource {
	connection, replication := DRBD9Conn(r.Conn)
	wo := r.WriteOrder
	if wo == 0 {
		wo = 'f'
	}
	jr := JSONResource{
		Name:            r.Name,
		NodeID:          r.NodeID,
		Role:            role(r.Role),
		Suspended:       r.Suspended,
		SuspendedUser:   r.Suspended && slices.Contains(strings.Split(r.SuspendedWhy, ","), "user"),
		SuspendedQuorum: r.Suspended && slices.Contains(strings.Split(r.SuspendedWhy, ","), "quorum"),
		WriteOrdering:   writeOrdering(wo),
		Devices: []JSONDevice{{
			Minor:        r.Minor,
			DiskState:    disk(r.Disk),
			Open:         r.NBDClients > 0,
			Quorum:       r.Quorum == nil || r.Quorum.Have,
			Size:         kib(r.Size),
			Read:         kib(r.DiskRead),
			Written:      kib(r.DiskWritten),
			ALWrites:     r.ALWrites,
			BMWrites:     r.BMWrites,
			UpperPending: r.AppPending,
			LowerPending: r.LocalPending,
		}},
		Connections: []JSONConnection{},
		Twinblock: JSONTwinblock{
			Node:       r.Self,
			CState:     conn84(r.Conn),
			NBDClients: r.NBDClients,
			Epochs:     r.Epochs,

			KernelDevice: r.KernelDevice, KernelAttached: r.KernelAttached, KernelError: r.KernelError,
		},
	}
	if q := r.Quorum; q != nil {
		jr.Twinblock.Quorum = &JSONQuorum{Quorum: q.Have, Epoch: q.Epoch, Primary: q.Primary, Leader: q.Leader, Outdated: q.Outdated}
	}
	if r.Protocol != 0 {
		jr.Twinblock.Protocol = string(rune(r.Protocol))
	}
	if sp := r.Sync; sp != nil {
		jr.Twinblock.Sync = &JSONSyncInfo{
			Verify:         isVerify(r),
			TotalBytes:     sp.Total,
			LeftBytes:      sp.Left,
			ElapsedMs:      sp.Elapsed.Milliseconds(),
			RecentBytes:    sp.RecentBytes,
			RecentWindowMs: sp.RecentWindow.Milliseconds(),
			Stalled:        sp.Stalled,
			WantKiBps:      sp.WantKiBps,
		}
	}
	if r.Peer == "" {
		return jr
	}
	c := JSONConnection{
		Name:            r.Peer,
		PeerNodeID:      r.PeerNodeID,
		ConnectionState: connection,
		PeerRole:        role(r.PeerRole),
		APInFlight:      r.APInFlight >> 9,
		RSInFlight:      r.RSInFlight >> 9,
		Paths:           []JSONPath{},
	}
	if r.SplitBrain {
		c.SplitBrain, c.SplitBrainRule = true, r.SplitBrainRule
	}
	if r.Address != "" || r.PeerAddress != "" {
		c.Paths = append(c.Paths, JSONPath{
			ThisHost:    jsonHost(r.Address),
			RemoteHost:  jsonHost(r.PeerAddress),
			Established: connection == connConnected,
		})
	}
	c.PeerDevices = []JSONPeerDevice{jsonPeerDevice(r, replication)}
	jr.Connections = append(jr.Connections, c)
	return jr
}

// percentInSync is DRBD 9's percent-in-sync: the share of the device
// not out of sync, to two decimals (ClusterLabs' ha_cluster_exporter
// reads it).
func percentInSync(size, oos uint64) float64 {
	if size == 0 {
		if oos == 0 {
			return 100
		}
		return 0
	}
	oos = min(oos, size)
	return math.Floor(float64(size-oos)/float64(size)*10000) / 100
}

func jsonPeerDevice(r Resource, replication string) JSONPeerDevice {
	pd := JSONPeerDevice{
		ReplicationState: replication,
		PeerDiskState:    disk(r.PeerDisk),
		ResyncSuspended:  resyncSuspended(r),
		Received:         kib(r.NetRecv),
		Sent:             kib(r.NetSent),
		OutOfSync:        kib(r.OutOfSync),
		PercentInSync:    percentInSync(r.Size, r.OutOfSync),
		Pending:          r.Pending,
		Unacked:          r.Unacked,
	}
	sp := r.Sync
	if sp == nil || sp.Total == 0 {
		return pd
	}
	left := min(sp.Left, sp.Total)
	verify := isVerify(r)
	pd.HasSyncDetails = true
	pd.HasOnlineVerifyDetails = verify && left > 0

	pd.RSTotal = ptr(sp.Total >> 9)
	pd.RSDt1Ms = ptr(sp.RecentWindow.Milliseconds())
	pd.RSDb1Sectors = ptr(sp.RecentBytes >> 9)
	if pd.HasOnlineVerifyDetails {
		pd.OVLeft = ptr(left >> 9)
	}
	pd.Want = ptr(round2(float64(sp.WantKiBps) / 1024))
	pd.DB1DT1 = ptr(round2(recentMiBps(*sp)))
	eta := float64(noEstimate)
	if e, ok := etaSeconds(*sp); ok {
		eta = math.Round(e)
	}
	pd.EstimatedSecondsToFinish = ptr(eta)
	elapsed := sp.Elapsed
	if elapsed <= 0 {
		elapsed = time.Millisecond // drbdsetup's dt?:1 (ms)
	}
	pd.DBDT = ptr(round2(float64(sp.Total-left) / elapsed.Seconds() / (1 << 20)))
	pd.PercentResyncDone = ptr(round2(percentDone(*sp)))
	return pd
}

// jsonHost splits "ip:port" as drbdsetup's address_json prints it.
func jsonHost(addr string) JSONHost {
	h := JSONHost{Address: addr, Family: "unknown"}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return h
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return h
	}
	h.Address, h.Port = ip.String(), int(n)
	if ip.Unmap().Is4() {
		h.Family = "ipv4"
	} else {
		h.Family = "ipv6"
	}
	return h
}

// round2 rounds to two decimals, the precision of drbdsetup's "%.2f".
func round2(f float64) float64 { return math.Round(f*100) / 100 }

func ptr[T any](v T) *T { return &v }
