package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twinblock/twinblock/pkg/kdev"
)

// kernelAttachTimeout bounds an attach of the kernel device (the
// handshake with this node's own export and the kernel's setup).
const kernelAttachTimeout = 30 * time.Second

// kernelDetachTimeout bounds a detach: the write-back of the device's
// dirty pages through the export, then the disconnect.
const kernelDetachTimeout = 60 * time.Second

// kernelSessionTimeout bounds the wait, after a detach, for the kernel's
// NBD session to leave the export; the demotion then fails.
const kernelSessionTimeout = 30 * time.Second

// kernelForcedSessionWait is that wait before a forced demotion (secondary
// --force), which then goes ahead and fails the session's requests.
const kernelForcedSessionWait = 5 * time.Second

// kernelDevice is the `device /dev/nbdN;` of this node's section: while
// the node serves (Primary), its export is attached to that kernel
// device, as DRBD's /dev/drbdN appears on a Primary; it is detached
// before the node demotes.
//
// Invariant: the device is detached (its dirty pages written back
// through the export, which replicates them) before a demotion the
// administrator asked for steps the state machine; a demotion is refused
// while the device is in use (mounted), unless forced.
type kernelDevice struct {
	export string // the export's name
	log    *slog.Logger
	wg     *sync.WaitGroup // the resource's: the attach goroutines

	mu        sync.Mutex
	path      string        // the device; "" without a device line (applyConfig may change it while not serving)
	listen    string        // the export's address (likewise)
	dev       *kdev.Device  // attached; nil otherwise
	attaching chan struct{} // closed when the running attach ends; nil if none
	cancel    func()        // ends the running attach
	lastErr   error         // why the last attach failed (status, explain)
	noModule  bool          // the one warning about a missing nbd module was given
	changed   func()        // the status changed
}

// attach starts attaching the device if it is configured and not
// attached or attaching (run calls it when the node starts serving).
func (k *kernelDevice) attach(ctx context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.path == "" || k.dev != nil || k.attaching != nil {
		return
	}
	done := make(chan struct{})
	actx, cancel := context.WithTimeout(ctx, kernelAttachTimeout)
	k.attaching, k.cancel = done, cancel
	path, listen := k.path, k.listen
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer cancel()
		dev, err := kdev.Attach(actx, path, listen, k.export)
		k.mu.Lock()
		k.attaching, k.cancel = nil, nil
		k.dev, k.lastErr = dev, err
		switch {
		case err == nil:
			k.log.Info("kernel device attached", "device", path, "size", dev.Size())
		case errors.Is(err, kdev.ErrNoModule):
			if !k.noModule {
				k.noModule = true
				k.log.Warn("kernel device not attached: the nbd module is not loaded; the NBD export is served alone (modprobe nbd, then promote again)", "device", path, "err", err)
			}
		default:
			k.log.Error("kernel device not attached; the NBD export is served alone", "device", path, "err", err)
		}
		k.mu.Unlock()
		close(done)
		if k.changed != nil {
			k.changed()
		}
		if dev != nil {
			// The kernel may let go on its own (the export closed under
			// it): forget the device then.
			go func() {
				<-dev.Done()
				k.mu.Lock()
				if k.dev == dev {
					k.dev = nil
					k.log.Warn("kernel device disconnected", "device", path)
				}
				k.mu.Unlock()
			}()
		}
	}()
}

// errDeviceInUse is drbdsetup's -12 for a demotion of a device in use.
var errDeviceInUse = errors.New("State change failed: (-12) Device is held open by someone")

// detach detaches the device, after the attach under way if any: its
// dirty pages are written back first. Unless force, a device in use
// (mounted) is left attached and errDeviceInUse returned.
func (k *kernelDevice) detach(ctx context.Context, force bool) error {
	k.mu.Lock()
	if k.attaching != nil {
		wait, cancel := k.attaching, k.cancel
		k.mu.Unlock()
		if force {
			cancel()
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		k.mu.Lock()
	}
	dev := k.dev
	k.mu.Unlock()
	if dev == nil {
		return nil
	}
	if !force && dev.Busy() {
		return fmt.Errorf("%w: %s is in use (mounted?)", errDeviceInUse, dev.Path())
	}
	// Forgotten first, so that the watcher of dev.Done does not take
	// this detach for the kernel letting go on its own.
	k.mu.Lock()
	if k.dev == dev {
		k.dev = nil
	}
	k.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, kernelDetachTimeout)
	defer cancel()
	err := dev.Detach(dctx)
	if err != nil {
		k.log.Error("kernel device detach", "device", dev.Path(), "err", err)
	} else {
		k.log.Info("kernel device detached", "device", dev.Path())
	}
	if k.changed != nil {
		k.changed()
	}
	return err
}

// attached reports whether the device is attached now.
func (k *kernelDevice) attached() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dev != nil
}

// status is the device, whether it is attached, and the last attach's
// error ("" none).
func (k *kernelDevice) status() (path string, attached bool, lastErr string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lastErr != nil {
		lastErr = k.lastErr.Error()
	}
	return k.path, k.dev != nil, lastErr
}

// detachKernel detaches the kernel device before a demotion (Do), and
// waits until its NBD session has left the export, so that the state
// machine's open count no longer holds it (others: the NBD clients
// besides the kernel). If it has not left after kernelSessionTimeout the
// demotion fails with an error that says so; a forced one goes ahead
// after kernelForcedSessionWait.
func (r *Resource) detachKernel(ctx context.Context, force bool, others int) error {
	if !r.kernel.attached() {
		return nil
	}
	if err := r.kernel.detach(ctx, force); err != nil {
		return err
	}
	wait := kernelSessionTimeout
	if force {
		wait = kernelForcedSessionWait
	}
	return awaitSessions(ctx, func() (n int, err error) {
		err = r.inspect(ctx, func() { n = r.exp.Sessions() })
		return n, err
	}, others, wait, force)
}

// awaitSessions polls sessions until it reports at most others. After
// wait it fails with an error that says the kernel's session is still
// open (said here, not left to the state machine's -12, which would
// blame a client the administrator cannot see), or, if force, returns
// nil: a forced demotion ends the session's requests anyway.
func awaitSessions(ctx context.Context, sessions func() (int, error), others int, wait time.Duration, force bool) error {
	deadline := time.Now().Add(wait)
	for {
		n, err := sessions()
		if err != nil {
			return err
		}
		if n <= others {
			return nil
		}
		if time.Now().After(deadline) {
			if force {
				return nil
			}
			return fmt.Errorf("State change failed: the kernel device detached, but its NBD session is still open on the export after %v (%d sessions, %d other clients)", wait, n, others)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
