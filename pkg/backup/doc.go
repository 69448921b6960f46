// Package backup implements net { backup-discarded yes; } (a twinblock
// addition): when a split brain is resolved against this node, the node
// saves the old content of every block the resync (and the survivor's mirrored writes) overwrite
// until the resync as target completes, so that `twinblock
// restore-discarded` can undo a wrong choice. The file format is in
// index.go.
//
// The blocks are overwritten by the peer link's applier, which may run
// the survivor's writes as soon as the link is up, before the node's event
// loop has seen the handshake's decision. So the save is copy-on-write at the disk the
// link writes to (cowDisk), with a journal armed before the connection
// exists (Keeper.Arm) and kept or dropped once the loop knows the decision
// (Keeper.Decide):
//
//   - armed, not yet a discard: the blocks overwritten in that window are
//     saved; if the handshake decides no discard, the journal is dropped
//     and its files (if it created any) removed;
//   - a discard: it stays armed across link drops and reconnects (the
//     resync resumes from the bitmap) and across a daemon restart (the
//     next attach of an Inconsistent disk reopens an incomplete index),
//     until the disk is UpToDate and Connected again; then the index gets
//     its "complete" line.
//
// Invariant: a block is overwritten through cowDisk while a journal is
// armed only after its old content is durable in the image and its run
// durable in the index (fdatasync of both, image first). A block is saved
// once: a second overwrite would save the survivor's data.
//
// Failing to save (the metadata directory full, say) fails the write:
// nothing is discarded without its backup. The link reports it as a disk
// error (on-io-error applies).
//
// pkg/node drives a Keeper from its event loop at fixed points (see
// Keeper); `twinblock restore-discarded` (pkg/cli) reads the files back
// through ReadIndex.
package backup
