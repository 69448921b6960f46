package backup

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/pkg/config"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/splitbrain"
)

// DeviceDir holds the backup-discarded files of resources whose
// metadata lives on a block device.
const DeviceDir = "/var/lib/twinblock"

// Dir is where host h keeps its backup-discarded files: the metadata
// directory (the meta-disk file's, or with internal metadata the backing
// disk's); for a device under /dev (a tmpfs, gone at reboot), DeviceDir.
func Dir(h *config.Host) string {
	p := h.Disk
	if !h.MetaDisk.Internal && h.MetaDisk.Path != "" {
		p = h.MetaDisk.Path
	}
	dir := filepath.Dir(p)
	if dir == "/dev" || strings.HasPrefix(dir, "/dev/") {
		return DeviceDir
	}
	return dir
}

// Config is one resource's backup-discarded setting and names.
type Config struct {
	Enabled              bool // net { backup-discarded yes; }
	Resource, Self, Peer string
	Dir                  string // where the files go (Dir)
	Log                  *slog.Logger
}

// Keeper holds a resource's armed journal, if any, and decides its fate
// from what the node tells it. The node calls, from its event loop:
//
//   - Disk when it builds the disk the peer link writes to;
//   - Arm before a connection is set up (the peer may write as soon as
//     the link exists);
//   - Decide after the state machine stepped the connection up (and its
//     Ready was acted on, so its handshake lines are logged first);
//   - Idle when no connection is up or being set up;
//   - Reconcile after every Ready;
//   - Close when the disk is detached;
//   - Resume after an attach.
//
// Only the cow disks read the armed journal from other goroutines.
type Keeper struct {
	cfg Config
	j   atomic.Pointer[journal]
}

// New returns the keeper of one resource.
func New(cfg Config) *Keeper {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{cfg: cfg}
}

// Disk returns the disk the peer link writes to: data itself, or with
// backup-discarded on, data behind the copy-on-write of the armed
// journal.
func (k *Keeper) Disk(data disk.Disk) disk.Disk {
	if !k.cfg.Enabled || data == nil {
		return data
	}
	return &cowDisk{Disk: data, j: &k.j}
}

// Arm arms a journal for a connection about to be set up, unless one is
// armed (a discard in progress, or another attempt's). size is the data
// area's, gi this node's generations (for the index's header).
func (k *Keeper) Arm(size int64, gi genid.GI) {
	if !k.cfg.Enabled || k.j.Load() != nil {
		return
	}
	now := time.Now().UTC()
	var img string
	for {
		img = filepath.Join(k.cfg.Dir, FileName(k.cfg.Resource, now))
		if _, err := os.Lstat(img); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Lstat(IndexPath(img)); errors.Is(err, os.ErrNotExist) {
				break
			}
		}
		now = now.Add(time.Second)
	}
	header := fmt.Sprintf("twinblock backup-discarded v1: resource %s, node %s, peer %s, created %s, data size %d bytes, block %d; this node's generations %s",
		k.cfg.Resource, k.cfg.Self, k.cfg.Peer, now.Format(time.RFC3339), size, BlockSize, gi)
	k.j.Store(newJournal(img, size, header))
}

// IsDiscardOfSelf reports a handshake that resolved a split brain
// against this node: it becomes the sync target of the survivor.
func IsDiscardOfSelf(o splitbrain.Outcome) bool {
	return o.SplitBrain && o.Decision < 0 && o.Refuse == ""
}

// Decide takes the connection's handshake outcome (nil: no handshake
// ran for it) and the peer's generations: a discard of this node keeps
// the journal armed until its resync completes; anything else drops it.
func (k *Keeper) Decide(o *splitbrain.Outcome, peer genid.GI) {
	j := k.j.Load()
	if j == nil || j.discard {
		return // a discard stays armed until its resync completes
	}
	if o == nil || !IsDiscardOfSelf(*o) {
		k.drop(j, "this connection discards nothing (%d blocks saved before the handshake decided)")
		return
	}
	j.discard = true
	j.note(fmt.Sprintf("split brain resolved against this node (uuid_compare rule %d; %s); the peer's generations %s",
		o.Rule, o.Resolution, peer))
	if err := j.materialize(); err != nil {
		// Retried at the first save, which fails its write if it fails
		// again.
		k.cfg.Log.Error("cannot create the discarded-blocks files", "file", j.img, "err", err)
	}
	k.cfg.Log.Info(fmt.Sprintf("saving the blocks this node discards to %s", j.img), "resolution", o.Resolution)
}

// Idle drops an armed journal that is no discard: no connection is up or
// being set up.
func (k *Keeper) Idle() {
	if j := k.j.Load(); j != nil && !j.discard {
		k.drop(j, "this connection discards nothing (%d blocks saved before the handshake decided)")
	}
}

// drop disarms j and removes what it saved; why has a %d for the blocks.
func (k *Keeper) drop(j *journal, why string) {
	k.j.CompareAndSwap(j, nil)
	if n, files := j.abandon(); files {
		k.cfg.Log.Info(fmt.Sprintf("removed %s: "+why, j.img, n))
	}
}

// Reconcile completes a discard's journal once its resync as target is
// done: synced is true when the disk is UpToDate and the connection
// established.
func (k *Keeper) Reconcile(synced bool) {
	j := k.j.Load()
	if j == nil || !j.discard || !synced {
		return
	}
	k.j.CompareAndSwap(j, nil)
	n, files, err := j.complete()
	switch {
	case err != nil:
		k.cfg.Log.Error("discarded-blocks index: writing its end", "file", j.idx(), "err", err)
	case files:
		k.cfg.Log.Info(fmt.Sprintf("discarded blocks saved: %d blocks in %s", n, j.img))
	default:
		k.cfg.Log.Info("discarded blocks saved: 0 blocks; the resync overwrote nothing, no file written")
	}
}

// Close ends the journal with the disk (detach, shutdown): a discard's
// stays on disk, incomplete, for the next attach.
func (k *Keeper) Close() {
	j := k.j.Swap(nil)
	if j == nil {
		return
	}
	if !j.discard {
		if n, files := j.abandon(); files {
			k.cfg.Log.Info(fmt.Sprintf("removed %s: the disk was detached before the handshake decided (%d blocks saved)", j.img, n))
		}
		return
	}
	if n, files := j.suspend(); files {
		k.cfg.Log.Info(fmt.Sprintf("the save of the discarded blocks to %s is incomplete (%d blocks): the resync did not finish; it resumes at the next attach", j.img, n))
	}
}

// Resume runs after an attach: an Inconsistent disk whose newest
// discarded-blocks index is incomplete is still to be resynced after a
// discard (the daemon stopped during it), so its journal is reopened.
func (k *Keeper) Resume(size int64, inconsistent bool) {
	if !k.cfg.Enabled || k.j.Load() != nil || !inconsistent {
		return
	}
	img, err := unfinished(k.cfg.Dir, k.cfg.Resource)
	if err != nil {
		k.cfg.Log.Warn("cannot resume the save of the discarded blocks", "err", err)
		return
	}
	if img == "" {
		return
	}
	j, err := openJournal(img, size)
	if err != nil {
		k.cfg.Log.Warn("cannot resume the save of the discarded blocks", "file", img, "err", err)
		return
	}
	k.j.Store(j)
	k.cfg.Log.Info(fmt.Sprintf("resuming the save of the blocks this node discards to %s (%d blocks saved before)", img, j.blocks()))
}

// Armed describes the armed journal: its image, whether it is a discard
// and the blocks it saved (ok false: none is armed).
func (k *Keeper) Armed() (img string, discard bool, blocks uint64, ok bool) {
	j := k.j.Load()
	if j == nil {
		return "", false, 0, false
	}
	return j.img, j.discard, j.blocks(), true
}

// unfinished returns the image of resource res's newest discarded-blocks
// index in dir if that index is not complete ("" if there is none, or
// the newest is complete: older ones were abandoned).
func unfinished(dir, res string) (string, error) {
	idxs, err := filepath.Glob(filepath.Join(dir, res+"-discarded-*.img.blocks"))
	if err != nil || len(idxs) == 0 {
		return "", err
	}
	sort.Strings(idxs) // the names sort by time
	img := strings.TrimSuffix(idxs[len(idxs)-1], ".blocks")
	x, err := ReadIndex(IndexPath(img))
	if err != nil {
		return "", err
	}
	if x.Complete {
		return "", nil
	}
	return img, nil
}
