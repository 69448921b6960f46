// Package genid holds DRBD's generation identifiers as values: the GI
// tuple (current, bitmap and two history UUIDs) with its rotations (a new
// data generation, the start and end of a resync), UUID comparison, and
// the superblock's MDF_* flags with drbdadm's show-gi and get-gi forms.
//
// It does no I/O, so that the pure state machine (pkg/fsm) and the sync
// handshake (splitbrain) use it without depending on the metadata's
// storage (pkg/meta, which persists these values, and pkg/disk below it).
// A rotation's result is persisted by the caller (meta.Meta.Update)
// before it is acted on.
package genid
