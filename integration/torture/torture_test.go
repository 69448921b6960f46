package torture

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

var (
	flagDuration   = flag.Duration("torture.duration", 0, "run episodes for this long (make torture-real DURATION=...)")
	flagEpisodes   = flag.Int("torture.episodes", 0, "run at most this many episodes")
	flagSeed       = flag.Uint64("torture.seed", 0, "the nemesis' and the writer's seed (0: from the clock); a failure prints it")
	flagKinds      = flag.String("torture.kinds", "all", "comma-separated fault kinds to run (see nemesis.go)")
	flagSizeMiB    = flag.Int("torture.size", 64, "disk size in MiB")
	flagWorkers    = flag.Int("torture.workers", 6, "writer goroutines sharing the NBD connection")
	flagFaulty     = flag.Bool("torture.faulty", true, "put the disks on nbdkit's error filter through nbdfuse (needed by the disk-fail kinds)")
	flagRate       = flag.String("torture.resync-rate", "16M", "the fixed resync rate (slow enough for a crash to land inside a resync)")
	flagBin        = flag.String("torture.bin", "", "a twinblock binary to test instead of building ../../cmd/twinblock")
	flagKeep       = flag.Bool("torture.keep", false, "keep the work directory (disks, configs, daemon logs) even when the run passes")
	flagMaxOutage  = flag.Duration("torture.max-outage", 6*time.Second, "the longest SIGSTOP or black hole (a link cut: two thirds of it)")
	flagStrict     = flag.Bool("torture.strict-service", false, "a stretch without service longer than allowed while the Primary lives fails the run (default: a warning)")
	flagStuckAfter = flag.Duration("torture.stuck-after", 90*time.Second, "a request or an unhealthy pair this old is a finding")
)

// requireTools reports whether the tools exist; where tools are required
// (CI=true or TWINBLOCK_REQUIRE_TOOLS=1) a missing one fails the test.
func haveTools(t *testing.T, names ...string) bool {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") == "true" || os.Getenv("TWINBLOCK_REQUIRE_TOOLS") == "1" {
				t.Fatalf("%s is required here but not installed (.ci/run installs it)", n)
			}
			t.Logf("%s not installed: the disk-fail kinds do not run", n)
			return false
		}
	}
	return true
}

// TestRealTorture is the real-process torture suite: two twinblock
// daemons, a ledger writer over NBD, one fault per episode, a heal and a
// check after each. It runs when -torture.duration or -torture.episodes
// is given (make torture-real, and the short run of make test), or with
// TWINBLOCK_TORTURE_REAL=1 (60 s).
func TestRealTorture(t *testing.T) {
	dur, eps := *flagDuration, *flagEpisodes
	if dur == 0 && eps == 0 {
		if os.Getenv("TWINBLOCK_TORTURE_REAL") != "1" {
			t.Skip("the real-process torture suite runs with -torture.duration or -torture.episodes (make torture-real) or TWINBLOCK_TORTURE_REAL=1")
		}
		dur = 60 * time.Second
	}
	kinds, err := ParseKinds(*flagKinds)
	if err != nil {
		t.Fatal(err)
	}
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	faulty := *flagFaulty && haveTools(t, "nbdkit", "nbdfuse", "fusermount3")

	dir, err := os.MkdirTemp("", "twinblock-torture-")
	if err != nil {
		t.Fatal(err)
	}
	bin := *flagBin
	if bin == "" {
		bin = filepath.Join(dir, "twinblock")
		build := exec.Command("go", "build", "-o", bin, "../../cmd/twinblock")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building twinblock: %v\n%s", err, out)
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "run")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("seed %d (replay: go test ./integration/torture -run TestRealTorture -v -args -torture.seed=%d -torture.episodes=N); work directory %s", seed, seed, work)

	rep, runErr := Run(Config{
		Bin: bin, Dir: work, Seed: seed, Duration: dur, Episodes: eps, Kinds: kinds,
		DiskSize: int64(*flagSizeMiB) << 20, Workers: *flagWorkers, Faulty: faulty,
		ResyncRate: *flagRate, StuckAfter: *flagStuckAfter, MaxOutage: *flagMaxOutage, StrictService: *flagStrict,
		Logf: t.Logf,
	})
	if rep != nil {
		t.Logf("\n%s", rep.Table())
	}
	failed := runErr != nil || rep == nil || rep.Failed()
	if runErr != nil {
		t.Errorf("the run stopped: %v", runErr)
	}
	if rep != nil && rep.Failed() {
		t.Errorf("%d findings; replay with -torture.seed=%d", len(rep.Findings), seed)
	}
	if failed || *flagKeep {
		t.Logf("work directory kept: %s (daemon logs a.log, b.log)", work)
		return
	}
	os.RemoveAll(dir)
}
