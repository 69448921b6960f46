package metrics

import (
	"fmt"
	"slices"

	"github.com/twinblock/twinblock/pkg/status"
)

// The enumerations drbd-reactor writes one sample per state of (DRBD 9's
// names; twinblock's 8.4-style states are mapped with status.DRBD9Conn).
var (
	roles      = []string{"Unknown", "Primary", "Secondary"}
	connStates = []string{"StandAlone", "Disconnecting", "Unconnected", "Timeout", "BrokenPipe", "NetworkFailure", "ProtocolError", "Connecting", "TearDown", "Connected"}
	diskStates = []string{"Diskless", "Attaching", "Detaching", "Failed", "Negotiating", "Inconsistent", "Outdated", "DUnknown", "Consistent", "UpToDate"}
	replStates = []string{"Off", "Established", "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID", "SyncSource", "SyncTarget", "VerifyS", "VerifyT", "PausedSyncS", "PausedSyncT", "Ahead", "Behind"}
	requestOps = []string{"read", "write", "trim", "write_zeroes", "flush"}
)

// Latency is a resource's latency histograms: the NBD requests by
// operation (read, write, trim, write_zeroes, flush) and the replicated
// writes' round trip to the peer.
type Latency struct {
	Requests    map[string]HistogramSnapshot
	Replication HistogramSnapshot
}

// Header adds the daemon-wide samples: twinblock's version and the number
// of resources (drbd_resource_resources).
func Header(e *Exposition, version string, resources int) {
	e.Gauge("twinblock_build_info", "twinblock's version (always 1)", 1, Label{"version", version})
	e.Gauge("drbd_resource_resources", "Number of resources", float64(resources))
}

// AddResource adds the samples of one resource that is up: drbd-reactor's
// families for its resource, connection, peer device and device, and
// twinblock's own (latency, replication round trip, quorum, resync). A
// resource that is not up has no samples, as drbd-reactor knows only what
// events2 reports.
func AddResource(e *Exposition, s status.Resource, lat Latency) {
	if !s.Configured {
		return
	}
	name := Label{"name", s.Name}
	connection, replication := status.DRBD9Conn(s.Conn)
	role := s.Role
	if role == "" {
		role = "Unknown"
	}
	e.Enum("drbd_resource_role", "DRBD role of the resource", roles, role, name)
	e.Gauge("drbd_resource_suspended", "Boolean whether the resource is suspended", b(s.Suspended), name)
	may, score := status.PromotionInfo(s)
	e.Gauge("drbd_resource_maypromote", "Boolean whether the resource may be promoted to Primary", b(may), name)
	e.Gauge("drbd_resource_promotionscore", "The promotion score (higher is better) for the resource", float64(score), name)
	e.Gauge("drbd_resource_forceiofailures", "Boolean whether the resource is configured (could be temporarily) to force IO failures (e.g., during secondary --force)", 0, name)

	if s.Peer != "" {
		conn := []Label{name, {"conn_name", s.Peer}, {"peer_node_id", fmt.Sprint(s.PeerNodeID)}}
		pd := append(slices.Clone(conn), Label{"volume", "0"})
		e.Enum("drbd_connection_state", "DRBD connection state", connStates, connection, conn...)
		e.Gauge("drbd_peerdevice_outofsync_bytes", "Number of bytes currently out of sync with this peer, according to the bitmap that DRBD has for it", float64(s.OutOfSync), pd...)
		e.Counter("drbd_peerdevice_sent_bytes", "Number of bytes currently sent to this peer", float64(s.NetSent), pd...)
		e.Counter("drbd_peerdevice_received_bytes", "Number of bytes currently received from this peer", float64(s.NetRecv), pd...)
		e.Gauge("drbd_connection_congested", "Boolean whether the TCP send buffer of the data connection is more than 80% filled", 0, conn...)
		e.Gauge("drbd_connection_apinflight_bytes", "Number of application requests in flight (not completed)", float64(s.APInFlight), conn...)
		e.Gauge("drbd_connection_rsinflight_bytes", "Number of resync requests in flight", float64(s.RSInFlight), conn...)
		e.Enum("twinblock_peerdevice_replication_state", "DRBD 9 replication state of the peer device", replStates, replication, pd...)
		var total, left float64
		if sp := s.Sync; sp != nil {
			total, left = float64(sp.Total), float64(min(sp.Left, sp.Total))
		}
		e.Gauge("twinblock_peerdevice_resync_total_bytes", "Bytes the running resync or verify covers (0: none running)", total, pd...)
		e.Gauge("twinblock_peerdevice_resync_left_bytes", "Bytes the running resync or verify has still to do (0: none running)", left, pd...)
		e.Histogram("twinblock_replication_rtt_seconds", "Round trip of a replicated write: from its submission to the peer link until the peer's answer (protocol C: written on the peer's disk)", lat.Replication, conn...)
	}

	dev := []Label{name, {"volume", "0"}, {"minor", fmt.Sprint(s.Minor)}}
	disk := s.Disk
	if disk == "" {
		disk = "DUnknown"
	}
	e.Enum("drbd_device_state", "DRBD device state", diskStates, disk, dev...)
	e.Gauge("drbd_device_client", "Boolean whether this device is a client (i.e., intentional diskless)", 0, dev...)
	e.Gauge("drbd_device_unintentionaldiskless", "Boolean whether the devices is unintentional diskless", b(disk == "Diskless"), dev...)
	e.Gauge("drbd_device_quorum", "Boolean if this device has DRBD quorum", b(s.Quorum == nil || s.Quorum.Have), dev...)
	e.Gauge("drbd_device_open", "Boolean if this device is opened", b(s.NBDClients > 0), dev...)
	e.Gauge("drbd_device_size_bytes", "Device size in bytes", float64(s.Size), dev...)
	e.Counter("drbd_device_read_bytes_total", "Net data read from local hard disk", float64(s.DiskRead), dev...)
	e.Counter("drbd_device_written_bytes_total", "Net data written on local disk", float64(s.DiskWritten), dev...)
	e.Counter("drbd_device_alwrites_total", "Number of updates of the activity log area of the meta data", float64(s.ALWrites), dev...)
	e.Counter("drbd_device_bmwrites_total", "Number of updates of the bitmap area of the meta data", float64(s.BMWrites), dev...)
	e.Gauge("drbd_device_upperpending", "Number of block I/O requests forwarded to DRBD, but not yet answered by DRBD.", float64(s.AppPending), dev...)
	e.Gauge("drbd_device_lowerpending", "Number of open requests to the local I/O sub-system issued by DRBD", float64(s.LocalPending), dev...)
	e.Gauge("drbd_device_alsuspended", "Boolean whether the Activity-Log is suspended", 0, dev...)
	e.Gauge("twinblock_device_nbd_clients", "Open NBD sessions of the export", float64(s.NBDClients), dev...)
	for _, op := range requestOps {
		e.Histogram("twinblock_nbd_request_duration_seconds", "Time an NBD request spends in the device, from its arrival until its answer, by operation", lat.Requests[op], append(slices.Clone(dev), Label{"op", op})...)
	}

	if q := s.Quorum; q != nil {
		e.Gauge("twinblock_quorum_have", "Boolean whether this node is in its quorum group's majority", b(q.Have), name)
		e.Gauge("twinblock_quorum_epoch", "The quorum group's epoch (raised by each promotion)", float64(q.Epoch), name)
		e.Gauge("twinblock_quorum_outdated", "Boolean whether the group holds this node Outdated", b(q.Outdated), name)
		e.Gauge("twinblock_quorum_primary", "Boolean whether the group names this node Primary", b(q.Primary != "" && q.Primary == s.Self), name)
		e.Gauge("twinblock_quorum_leader", "Boolean whether this node leads the quorum group (raft)", b(q.Leader != "" && q.Leader == s.Self), name)
	}
}

func b(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
