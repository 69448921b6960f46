// Package kdev attaches an NBD export to a Linux kernel NBD device
// (/dev/nbdN), as `nbd-client` does, so that a Primary's data appears as
// a block device (DRBD's /dev/drbdN).
//
// The handshake is twinblock's own client's (nbd/client), and the device
// is set up with the kernel's ioctls (linux/nbd.h): NBD_SET_BLKSIZE,
// NBD_SET_SIZE_BLOCKS, NBD_SET_FLAGS with the export's transmission
// flags, NBD_SET_TIMEOUT 0 (requests wait for the server: a takeover or
// a quorum hold must not turn into I/O errors) and NBD_SET_SOCK, then
// NBD_DO_IT on a goroutine of its own. go-nbd's client does the same but
// never sets the flags, so the kernel would never send FLUSH and an
// fsync would reach no disk; and its ioctl constants need cgo or amd64.
//
// Invariants:
//   - Detach writes the device's dirty pages back and has the kernel send
//     FLUSH before it disconnects: what the page cache held reaches both
//     disks (protocol C) before the device goes away.
//   - A device that is mounted or otherwise claimed (an O_EXCL open fails
//     with EBUSY) is reported Busy; the caller refuses to demote.
package kdev
