// Package resync schedules a resync and an online verify the way DRBD 8.4
// does: the dynamic resync-rate controller (drbd_rs_controller), the
// sync-target request scheduler (make_resync_request), the online-verify
// scheduler (VerifyS) and the sync marks behind the progress lines of the
// status file (drbd_syncer_progress).
//
// It imports neither replication nor pkg/node: the peer link, the bitmap,
// the local disk, the application's range lock and the clock come in
// through small interfaces and funcs (Transport, Bitmap, EngineConfig's
// ReadLocal/Digest/Lock/AppIO, Clock), so the tests drive it with fakes and
// a hand-driven clock.
//
// # Pieces
//
//   - Controller: pure, one Tick per 100 ms (clock.Tick) returning the
//     bytes to request; fixed rate or DRBD's fill/delay-target controller;
//     Throttle is the c-min-rate back-off. Formulas on the type.
//   - Progress: pure, the 8 sync marks 3 s apart, paused time excluded;
//     Snapshot fills status.SyncProgress.
//   - Engine: one goroutine bound to a context. NewResync walks the
//     out-of-sync bitmap and Fetches its dirty runs; NewVerify walks every
//     block and marks those whose digests differ.
//   - BitmapOf adapts a locked *bitmap.Bitmap (pkg/meta's) to Bitmap.
//
// # Engine invariants
//
//  1. A run's bits are cleared (SetInSync) only after its Fetch completed
//     with a nil error, and before the request's range lock is released. A
//     failed Fetch keeps its bits and stops the engine with the error; the
//     next resync resumes from the bitmap.
//  2. Requests never exceed MaxRequest (a multiple of BlockSize), the bytes
//     in flight never exceed MaxInFlight, and no two requests in flight
//     overlap: within a pass the cursor only moves forward past each
//     request, and a new pass starts only when nothing is in flight.
//  3. Requests are issued only from the controller's budget: each tick
//     grants Controller.Tick's bytes; unused budget is dropped at the next
//     tick, and a request rounded up to a whole block is paid back from
//     the next tick's budget. So over any run of ticks the bytes requested
//     are at most the budgets granted plus one block. Unlike DRBD, which
//     issues only at the tick, the rest of a tick's budget may be issued
//     when a completion frees room under MaxInFlight, so the in-flight cap
//     bounds memory without bounding the rate to MaxInFlight per tick.
//  4. Nothing is requested while paused, throttled (c-min-rate), failing
//     or closing.
//  5. The bitmap is live: bits set while the engine runs are picked up,
//     ahead of the cursor in the same pass, behind it in the next. A resync
//     finishes (Done closed, Err nil) when a pass has ended with nothing in
//     flight and NextDirty finds no bit from 0.
//  6. Done is closed only after every request's callback has returned; so
//     does Close. A Transport calls each request's done exactly once (a
//     second call panics: the in-flight accounting would be wrong).
//
// Lock order: the engine's mutex before the Bitmap's; the application
// range lock (EngineConfig.Lock) is taken without the engine's mutex and
// released after it.
//
// # Defaults
//
// Defaults() holds the controller's defaults for loopback and 10–25 GbE
// with SSD/NVMe (its doc justifies each): Rate 100 MiB/s, PlanAhead 20
// ticks, FillTarget 8 MiB, DelayTarget 10 ticks, MaxRate 4 GiB/s, MinRate
// 32 MiB/s. DRBD's (250 KiB/s, 50 KiB, 100 MiB/s, 250 KiB/s) would take
// days to resync 100 GiB under load and cap an NVMe pair at a tenth of its
// speed. The engine's defaults are DefaultMaxRequest (1 MiB, DRBD's largest
// request) and DefaultMaxInFlight (32 MiB, four fill targets).
package resync
