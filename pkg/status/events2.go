package status

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The events2 stream, in the line format of DRBD 9's `drbdsetup events2`
// (drbd-utils user/v9/drbdsetup_events2.c): one line per object that
// appeared, changed or went away,
//
//	ACTION OBJECT IDENTITY KEY:VALUE…
//
// ACTION is exists (the initial state, ended by the line "exists -"),
// create, change or destroy; OBJECT is resource, connection, device,
// peer-device or path. IDENTITY names the object (name:r0, then
// peer-node-id and conn-name for a connection, volume and minor for a
// device, …). A change line carries only the groups of keys that changed,
// as drbdsetup prints them: role; suspended; force-io-failures;
// may_promote with promotion_score; and so on. With Statistics the
// counters ride along, as drbdsetup's --statistics.
//
// A resource that is not up (not Configured) has no objects: `down`
// destroys them and `up` creates them, as in DRBD 9, where down removes
// the resource from the kernel.

// Events2Options are events2's flags.
type Events2Options struct {
	Statistics bool // --statistics: counters on every line that has any
	Full       bool // --full: a change line carries every key, not only the changed groups
}

// Events2Line is one line of the stream, its timestamp apart.
type Events2Line struct {
	Action string // exists, create, change, destroy
	Object string // resource, connection, device, peer-device, path
	Text   string // the whole line, without timestamp and newline
}

// Events2Timestamp formats t as drbdsetup's --timestamps prefix
// (2026-12-07T04:41:55.123456+00:00), without the trailing space.
func Events2Timestamp(t time.Time) string {
	return t.Format("2006-01-02T15:04:05.000000-07:00")
}

// Events2Diff returns the lines that take a reader from prev to next:
// "create" lines for objects that next has and prev has not, "change"
// lines with the groups that differ, "destroy" lines for objects that went
// away. prev nil is a resource not seen yet; next nil is a resource gone.
// With initial set, new objects are reported as "exists" (the stream's
// initial state) instead of "create". Objects come in drbdsetup's order:
// resource, connection, device, peer-device, path; destroyed ones in the
// reverse order.
func Events2Diff(prev, next *Resource, initial bool, opt Events2Options) []Events2Line {
	before, after := events2Objects(prev, opt), events2Objects(next, opt)
	newAction := "create"
	if initial {
		newAction = "exists"
	}
	var out []Events2Line
	for _, o := range after {
		i := slices.IndexFunc(before, func(b evObject) bool { return b.kind == o.kind && b.id == o.id })
		if i < 0 {
			out = append(out, o.line(newAction, nil, opt.Full))
			continue
		}
		if l := o.line("change", &before[i], opt.Full); l.Text != "" {
			out = append(out, l)
		}
	}
	for i := len(before) - 1; i >= 0; i-- {
		b := before[i]
		if !slices.ContainsFunc(after, func(o evObject) bool { return o.kind == b.kind && o.id == b.id }) {
			out = append(out, Events2Line{Action: "destroy", Object: b.kind, Text: "destroy " + b.kind + " " + cmp.Or(b.destroyID, b.id)})
		}
	}
	return out
}

// evObject is one events2 object of a resource: its identity and its
// groups of keys, each printed whole when any of its values changed.
type evObject struct {
	kind, id string
	// destroyID is the identity a destroy line names, when it is not id
	// (drbdsetup leaves a device's minor out of its destroy line).
	destroyID string
	groups    [][]kv
}

type kv struct{ k, v string }

// line is o's line for action, against its previous version prev (nil:
// a new object, every group). A change line carries the groups that
// differ, or with full every group; a change with no group that differs
// has empty Text.
func (o evObject) line(action string, prev *evObject, full bool) Events2Line {
	var b strings.Builder
	changed := prev == nil
	for gi, g := range o.groups {
		differs := prev == nil || gi >= len(prev.groups) || !slices.Equal(prev.groups[gi], g)
		changed = changed || differs && len(g) > 0 // a group gone (done: after a resync) is no change
		if !differs && !full {
			continue
		}
		for _, p := range g {
			b.WriteString(" " + p.k + ":" + p.v)
		}
	}
	if !changed {
		return Events2Line{}
	}
	return Events2Line{Action: action, Object: o.kind, Text: action + " " + o.kind + " " + o.id + b.String()}
}

// events2Objects lists r's objects (none when r is nil or not up).
func events2Objects(r *Resource, opt Events2Options) []evObject {
	if r == nil || !r.Configured {
		return nil
	}
	connection, replication := DRBD9Conn(r.Conn)
	wo := r.WriteOrder
	if wo == 0 {
		wo = 'f'
	}
	mayPromote, score := PromotionInfo(*r)

	res := evObject{kind: "resource", id: "name:" + r.Name, groups: [][]kv{
		{{"role", role(r.Role)}},
		{{"suspended", suspendedWhy(*r)}},
		{{"force-io-failures", "no"}},
		nil, // statistics
		{{"may_promote", yesNo(mayPromote)}, {"promotion_score", fmt.Sprint(score)}},
	}}
	dev := evObject{kind: "device", id: fmt.Sprintf("name:%s volume:0 minor:%d", r.Name, r.Minor), destroyID: "name:" + r.Name + " volume:0", groups: [][]kv{
		{{"disk", disk(r.Disk)}, {"client", "no"}, {"open", yesNo(r.NBDClients > 0)}, {"quorum", yesNo(r.Quorum == nil || r.Quorum.Have)}},
		nil, // statistics
		{{"blocked", "no"}},
	}}
	if opt.Statistics {
		res.groups[3] = []kv{{"write-ordering", writeOrdering(wo)}}
		dev.groups[1] = []kv{{"size", fmt.Sprint(kib(r.Size))}, {"read", fmt.Sprint(kib(r.DiskRead))}, {"written", fmt.Sprint(kib(r.DiskWritten))},
			{"al-writes", fmt.Sprint(r.ALWrites)}, {"bm-writes", fmt.Sprint(r.BMWrites)},
			{"upper-pending", fmt.Sprint(r.AppPending)}, {"lower-pending", fmt.Sprint(r.LocalPending)}}
	}
	if r.Suspended {
		dev.groups[2] = []kv{{"blocked", "upper"}} // requests are held above the device (suspend-io, no quorum)
	}
	objs := []evObject{res}
	if r.Peer == "" {
		return append(objs, dev)
	}
	peer := fmt.Sprintf("name:%s peer-node-id:%d conn-name:%s", r.Name, r.PeerNodeID, r.Peer)
	conn := evObject{kind: "connection", id: peer, groups: [][]kv{
		{{"connection", connection}},
		{{"role", role(r.PeerRole)}},
		nil,
	}}
	pd := evObject{kind: "peer-device", id: peer + " volume:0", groups: [][]kv{
		{{"replication", replication}},
		{{"peer-disk", disk(r.PeerDisk)}, {"peer-client", "no"}},
		{{"resync-suspended", resyncSuspended(*r)}},
		nil,
	}}
	if sp := r.Sync; sp != nil && sp.Total > 0 {
		// drbdsetup prints done: with or without --statistics.
		pd.groups[3] = []kv{{"done", fmt.Sprintf("%.2f", percentDone(*sp))}}
	}
	if opt.Statistics {
		conn.groups[2] = []kv{{"congested", "no"}, {"ap-in-flight", fmt.Sprint(r.APInFlight >> 9)}, {"rs-in-flight", fmt.Sprint(r.RSInFlight >> 9)}}
		pd.groups[3] = append(pd.groups[3], kv{"received", fmt.Sprint(kib(r.NetRecv))}, kv{"sent", fmt.Sprint(kib(r.NetSent))},
			kv{"out-of-sync", fmt.Sprint(kib(r.OutOfSync))}, kv{"pending", fmt.Sprint(r.Pending)}, kv{"unacked", fmt.Sprint(r.Unacked)})
	}
	objs = append(objs, conn, dev, pd)
	if r.Address != "" && r.PeerAddress != "" {
		objs = append(objs, evObject{kind: "path",
			id:     fmt.Sprintf("%s local:%s peer:%s", peer, events2Addr(r.Address), events2Addr(r.PeerAddress)),
			groups: [][]kv{{{"established", yesNo(connection == connConnected)}}}})
	}
	return objs
}

// events2Addr is drbdsetup's address form, FAMILY:ADDRESS:PORT
// (ipv4:10.0.0.1:7789, ipv6:[fd00::1]:7789).
func events2Addr(addr string) string {
	h := jsonHost(addr)
	switch h.Family {
	case "ipv4":
		return fmt.Sprintf("ipv4:%s:%d", h.Address, h.Port)
	case "ipv6":
		return fmt.Sprintf("ipv6:[%s]:%d", h.Address, h.Port)
	}
	return addr
}

// suspendedWhy is drbdsetup's suspended value: "no", or the reasons
// (user, no-data, fencing, quorum) joined by commas.
func suspendedWhy(r Resource) string {
	if !r.Suspended {
		return "no"
	}
	if r.SuspendedWhy == "" {
		return "user"
	}
	return r.SuspendedWhy
}

// PromotionInfo is drbdsetup's may_promote and promotion_score
// (compute_promotion_info) for one volume and one peer: no score without
// quorum or without an UpToDate replica (this disk or the peer's);
// otherwise 10000 when this node has a disk (UpToDate, Consistent or
// Inconsistent), plus 100 when it is UpToDate, plus the UpToDate
// replicas. A node may promote when it is the stable UpToDate replica (or
// its peer is) and no node is Primary.
func PromotionInfo(r Resource) (bool, int) {
	if r.Quorum != nil && !r.Quorum.Have {
		return false, 0
	}
	replicas := 0
	if r.Disk == "UpToDate" {
		replicas++
	}
	if r.PeerDisk == "UpToDate" {
		replicas++
	}
	if replicas == 0 {
		return false, 0
	}
	score := replicas
	switch r.Disk {
	case "UpToDate":
		score += 10000 + 100
	case "Consistent", "Inconsistent":
		score += 10000
	}
	return r.Role != "Primary" && r.PeerRole != "Primary", score
}
