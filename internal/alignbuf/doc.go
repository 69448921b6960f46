// Package alignbuf hands out memory aligned for O_DIRECT: one allocation
// at an alignment (Alloc), and a pool of power-of-two size classes from
// 4 KiB to 64 MiB, each buffer aligned to 4 KiB (Pool). The NBD server's
// request path and the peer link's applier share it, so that traffic
// that fits the pool allocates nothing.
package alignbuf
