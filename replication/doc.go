// Package replication will hold the peer link and the replicated device:
// the framed peer protocol, protocols A, B and C, the write path that
// mirrors every write to the Secondary, and resync. The replicated device
// will implement nbd.Device so that the NBD front end serves it unchanged.
// Not implemented yet: it arrives with issues 4 and 5. Nothing imports it
// today.
package replication
