package kdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twinblock/twinblock/nbd/client"
)

// The kernel's NBD ioctls (linux/nbd.h: _IO(0xab, n)).
const (
	nbdSetSock       = 0xab00
	nbdSetBlksize    = 0xab01
	nbdDoIt          = 0xab03
	nbdClearSock     = 0xab04
	nbdSetSizeBlocks = 0xab07
	nbdDisconnect    = 0xab08
	nbdSetTimeout    = 0xab09
	nbdSetFlags      = 0xab0a
)

// blockSize is the device's logical block size: the largest the kernel
// takes (4096), which every twinblock export's size is a multiple of.
const blockSize = 4096

// ErrNoModule: the device node does not exist or has no driver behind it
// (the nbd module is not loaded).
var ErrNoModule = errors.New("the nbd kernel module is not loaded (modprobe nbd)")

// ErrInUse: another client already drives the device.
var ErrInUse = errors.New("the device is already connected to a server")

// Device is an attached kernel NBD device.
type Device struct {
	path string
	f    *os.File // the device, held open while attached
	sock *os.File // the socket handed to the kernel
	nc   net.Conn
	size int64
	done chan struct{} // NBD_DO_IT returned
	err  error         // its error, once done

	once sync.Once
}

// Attach connects device (/dev/nbdN) to the export at addr ("host:port"
// or "unix:PATH") and returns once the kernel shows its size.
func Attach(ctx context.Context, device, addr, export string) (*Device, error) {
	f, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENXIO) || errors.Is(err, syscall.ENODEV) {
			return nil, fmt.Errorf("kdev: %s: %w: %w", device, ErrNoModule, err)
		}
		return nil, fmt.Errorf("kdev: %w", err)
	}
	if pid, ok := sysfs(device, "pid"); ok && pid != "" {
		f.Close()
		return nil, fmt.Errorf("kdev: %s: %w (pid %s)", device, ErrInUse, pid)
	}
	nc, size, flags, err := client.Negotiate(ctx, addr, client.Options{Export: export})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kdev: %s: %w", device, err)
	}
	fail := func(what string, err error) (*Device, error) {
		nc.Close()
		f.Close()
		return nil, fmt.Errorf("kdev: %s: %s: %w", device, what, err)
	}
	if size%blockSize != 0 || size == 0 {
		return fail("export size", fmt.Errorf("%d is not a positive multiple of %d", size, blockSize))
	}
	fc, ok := nc.(interface{ File() (*os.File, error) })
	if !ok {
		return fail("socket", fmt.Errorf("%T has no file descriptor", nc))
	}
	sock, err := fc.File()
	if err != nil {
		return fail("socket", err)
	}
	for _, c := range []struct {
		name    string
		req, at uintptr
	}{
		{"NBD_SET_BLKSIZE", nbdSetBlksize, blockSize},
		{"NBD_SET_SIZE_BLOCKS", nbdSetSizeBlocks, uintptr(size / blockSize)},
		{"NBD_SET_FLAGS", nbdSetFlags, uintptr(flags)},
		{"NBD_SET_TIMEOUT", nbdSetTimeout, 0},
		{"NBD_SET_SOCK", nbdSetSock, sock.Fd()},
	} {
		if err := ioctl(f, c.req, c.at); err != nil {
			sock.Close()
			_ = ioctl(f, nbdClearSock, 0)
			return fail(c.name, err)
		}
	}
	d := &Device{path: device, f: f, sock: sock, nc: nc, size: size, done: make(chan struct{})}
	go func() {
		d.err = ioctl(f, nbdDoIt, 0) // until the disconnect
		_ = ioctl(f, nbdClearSock, 0)
		close(d.done)
	}()
	// NBD_DO_IT sets the size up; wait until the kernel shows it.
	for {
		if s, ok := sysfs(device, "size"); ok && s != "0" && s != "" {
			return d, nil
		}
		select {
		case <-d.done:
			d.close()
			return nil, fmt.Errorf("kdev: %s: NBD_DO_IT ended at once: %v", device, d.err)
		case <-ctx.Done():
			_ = d.Detach(context.Background())
			return nil, fmt.Errorf("kdev: %s: the kernel did not bring the device up: %w", device, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Path is the device's path.
func (d *Device) Path() string { return d.path }

// Size is the device's size in bytes.
func (d *Device) Size() int64 { return d.size }

// Done is closed when the kernel let go of the device (a Detach, or the
// server closed the connection).
func (d *Device) Done() <-chan struct{} { return d.done }

// Busy reports whether the device is mounted or claimed by another
// user (an exclusive open fails with EBUSY). A process that has it open
// without claiming it is not seen.
func (d *Device) Busy() bool {
	f, err := os.OpenFile(d.path, os.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		return errors.Is(err, syscall.EBUSY)
	}
	f.Close()
	return false
}

// Detach writes the device's dirty pages back (fsync: the kernel sends
// FLUSH), disconnects it and waits until the kernel let go, at most
// until ctx ends.
func (d *Device) Detach(ctx context.Context) error {
	var err error
	select {
	case <-d.done:
	default:
		if serr := d.f.Sync(); serr != nil {
			err = fmt.Errorf("kdev: %s: writing back before the disconnect: %w", d.path, serr)
		}
		if derr := ioctl(d.f, nbdDisconnect, 0); derr != nil && err == nil {
			err = fmt.Errorf("kdev: %s: NBD_DISCONNECT: %w", d.path, derr)
		}
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		// The kernel holds requests the server does not answer: cut the
		// socket, which ends NBD_DO_IT.
		_ = d.nc.Close()
		<-d.done
		if err == nil {
			err = fmt.Errorf("kdev: %s: the disconnect did not finish: %w", d.path, ctx.Err())
		}
	}
	d.close()
	return err
}

func (d *Device) close() {
	d.once.Do(func() {
		_ = d.nc.Close()
		_ = d.sock.Close()
		_ = d.f.Close()
	})
}

func ioctl(f *os.File, req, arg uintptr) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), req, arg); e != 0 {
		return e
	}
	return nil
}

// sysfs reads /sys/block/NAME/ATTR of device (/dev/NAME).
func sysfs(device, attr string) (string, bool) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(device), attr))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}
