package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// FaultyDisk is a backing file that starts failing on command: nbdkit
// serves the image through its error filter on a Unix socket, and
// nbdfuse mounts that export as a file (Path) for the daemon to use as
// its disk. While the trigger file exists every read, write, flush, trim
// and zero fails with EIO; Fail creates it, Repair removes it.
type FaultyDisk struct {
	Image    string // the bytes on the host's filesystem
	dir      string
	sock     string
	mnt      string
	trigger  string
	nbdkit   *exec.Cmd
	nbdfuse  *exec.Cmd
	kitDone  chan struct{}
	fuseDone chan struct{}
}

// NewFaultyDisk creates a sparse image of size bytes in dir (named
// name.img) and mounts it; Close unmounts it.
func NewFaultyDisk(dir, name string, size int64, logf func(string, ...any)) (*FaultyDisk, error) {
	d := &FaultyDisk{
		Image:   filepath.Join(dir, name+".img"),
		dir:     dir,
		sock:    filepath.Join(dir, name+".nbdkit.sock"),
		mnt:     filepath.Join(dir, name+".fuse"),
		trigger: filepath.Join(dir, name+".fail"),
	}
	if err := makeSparse(d.Image, size); err != nil {
		return nil, err
	}
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		return nil, err
	}
	klog, err := os.Create(filepath.Join(dir, name+".nbdkit.log"))
	if err != nil {
		return nil, err
	}
	defer klog.Close()
	d.nbdkit = exec.Command("nbdkit", "-f", "--exit-with-parent", "-U", d.sock,
		"--filter=error", "file", d.Image,
		"error=EIO", "error-rate=100%", "error-file="+d.trigger)
	d.nbdkit.Stdout, d.nbdkit.Stderr = klog, klog
	d.nbdkit.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.nbdkit.Start(); err != nil {
		return nil, fmt.Errorf("harness: nbdkit: %w", err)
	}
	d.kitDone = make(chan struct{})
	go func() { _ = d.nbdkit.Wait(); close(d.kitDone) }()
	if err := Until(5*time.Second, func() bool { _, err := os.Stat(d.sock); return err == nil }); err != nil {
		d.Close()
		return nil, fmt.Errorf("harness: nbdkit did not create %s", d.sock)
	}
	flog, err := os.Create(filepath.Join(dir, name+".nbdfuse.log"))
	if err != nil {
		d.Close()
		return nil, err
	}
	defer flog.Close()
	d.nbdfuse = exec.Command("nbdfuse", d.mnt, "nbd+unix:///?socket="+d.sock)
	d.nbdfuse.Stdout, d.nbdfuse.Stderr = flog, flog
	d.nbdfuse.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.nbdfuse.Start(); err != nil {
		d.Close()
		return nil, fmt.Errorf("harness: nbdfuse: %w", err)
	}
	d.fuseDone = make(chan struct{})
	go func() { _ = d.nbdfuse.Wait(); close(d.fuseDone) }()
	if err := Until(10*time.Second, func() bool {
		fi, err := os.Stat(d.Path())
		return err == nil && fi.Size() == size
	}); err != nil {
		d.Close()
		return nil, fmt.Errorf("harness: nbdfuse did not mount %s", d.Path())
	}
	logf("disk %s: %s through nbdkit's error filter, mounted by nbdfuse at %s", name, d.Image, d.Path())
	return d, nil
}

// Path is the file the daemon opens.
func (d *FaultyDisk) Path() string { return filepath.Join(d.mnt, "nbd") }

// Fail makes every request fail with EIO from now on.
func (d *FaultyDisk) Fail() error { return os.WriteFile(d.trigger, nil, 0o644) }

// Repair ends the failure.
func (d *FaultyDisk) Repair() error {
	if err := os.Remove(d.trigger); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Failing reports whether the disk fails now.
func (d *FaultyDisk) Failing() bool { _, err := os.Stat(d.trigger); return err == nil }

// Close unmounts the file and stops nbdkit. The daemon using it must be
// gone.
func (d *FaultyDisk) Close() {
	_ = d.Repair()
	if d.nbdfuse != nil && d.fuseDone != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = exec.CommandContext(ctx, "fusermount3", "-u", d.mnt).Run()
		cancel()
		select {
		case <-d.fuseDone:
		case <-time.After(5 * time.Second):
			_ = d.nbdfuse.Process.Kill()
			<-d.fuseDone
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = exec.CommandContext(ctx, "fusermount3", "-u", "-z", d.mnt).Run()
			cancel()
		}
	}
	if d.nbdkit != nil && d.kitDone != nil {
		_ = d.nbdkit.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.kitDone:
		case <-time.After(5 * time.Second):
			_ = d.nbdkit.Process.Kill()
			<-d.kitDone
		}
	}
}

func makeSparse(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Until polls cond every 20 ms until it holds or within has passed.
func Until(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("harness: timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
