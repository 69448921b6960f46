// Package disk holds the storage twinblock writes to: a regular file or a
// block device (File), an in-memory disk (Mem), a crashable one (Crash)
// and a fault-injecting wrapper (Faulty) for tests, and NoFlush, a
// wrapper that drops flushes and FUA (disk-flushes no, md-flushes no).
// All of them implement Disk, which is the
// nbd.Device contract plus Close; see that interface for the guarantees
// (concurrency, FUA and Flush durability, zeroes after WriteZeroes).
//
// Errors carry the "disk:" prefix and wrap the underlying syscall error, so
// callers can map them with errors.Is / errors.As.
package disk
