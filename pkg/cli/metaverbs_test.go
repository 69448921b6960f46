package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/meta"
)

// run executes the command line and returns exit status, stdout, stderr.
func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	rc := Execute(context.Background(), args, &out, &errb)
	return rc, out.String(), errb.String()
}

// runCLIStdin is runCLI with stdin.
func runCLIStdin(stdin string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	rc := execute(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return rc, out.String(), errb.String()
}

// metaFixture writes a config with resource r0 (internal metadata) and
// r1 (external, indexed) for host l0, and their sparse disks.
func metaFixture(t *testing.T) (conf string, disks map[string]string) {
	dir := t.TempDir()
	disks = map[string]string{}
	for name, size := range map[string]int64{"r0.img": 256 << 20, "r1.img": 512 << 20, "r1.md": 2 * meta.IndexedSize} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, nil, 0o600))
		require.NoError(t, os.Truncate(p, size))
		disks[name] = p
	}
	conf = filepath.Join(dir, "twinblock.conf")
	src := fmt.Sprintf(`
common { disk { al-extents 101; } }
resource r0 {
  on l0 { disk %s; address 127.0.0.1:7790; meta-disk internal; }
  on l1 { disk /dev/sdb1; address 127.0.0.2:7790; meta-disk internal; }
}
resource r1 {
  on l0 { disk %s; address 127.0.0.1:7791; meta-disk %s[1]; }
  on l1 { disk /dev/sdb2; address 127.0.0.2:7791; meta-disk /dev/sdc[1]; }
}
`, disks["r0.img"], disks["r1.img"], disks["r1.md"])
	require.NoError(t, os.WriteFile(conf, []byte(src), 0o600))
	return conf, disks
}

func TestMetaVerbs(t *testing.T) {
	conf, disks := metaFixture(t)
	c := []string{"-c", conf, "--node", "l0"}
	verb := func(args ...string) (int, string, string) {
		return runCLI(append(append([]string{}, args...), c...)...)
	}

	rc, out, errs := verb("create-md", "all")
	require.Equal(t, 0, rc, errs)
	assert.Contains(t, out, "r0: writing meta data on "+disks["r0.img"]+" (meta-disk internal)")
	assert.Contains(t, out, "initializing activity log (101 extents, 32 KiB ring)")
	assert.Contains(t, out, "r1: writing meta data on "+disks["r1.md"]+" (meta-disk external[1])")
	assert.Equal(t, 2, strings.Count(out, "New twinblock meta data block successfully created."))

	// Refused without --force, whether the metadata is valid or not.
	rc, _, errs = verb("create-md", "r0")
	assert.Equal(t, 1, rc)
	assert.Contains(t, errs, "r0: valid metadata found on "+disks["r0.img"])
	assert.Contains(t, errs, "use --force to overwrite it")

	rc, out, errs = verb("show-gi", "r0")
	require.Equal(t, 0, rc, errs)
	assert.Contains(t, out, "\n0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0\n")
	assert.Contains(t, out, "flags: Secondary, StandAlone, Inconsistent\nmeta-data: clean\n")
	// get-gi, with no daemon up: the metadata answers.
	rc, out, errs = verb("get-gi", "r0")
	require.Equal(t, 0, rc, errs)
	assert.Equal(t, "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0\n", out)

	rc, out, errs = verb("new-current-uuid", "r1")
	require.Equal(t, 0, rc, errs)
	assert.Regexp(t, `^r1: [0-9A-F]{16}:0000000000000004:0000000000000000:0000000000000000:0:0:0:0:0:0:0\n$`, out)
	rc, out, errs = verb("--", "--clear-bitmap", "new-current-uuid", "r0") // DRBD's old order
	require.Equal(t, 0, rc, errs)
	assert.Regexp(t, `^r0: [0-9A-F]{16}:0000000000000004:0{16}:0{16}:0:0:0:0:0:0:0\n$`, out)

	// apply-al on a clean log: nothing to do.
	rc, out, errs = verb("apply-al", "r0")
	require.Equal(t, 0, rc, errs)
	assert.Equal(t, "r0: the activity log is clean: nothing to apply\n", out)

	rc, out, errs = verb("dump-md", "r0")
	require.Equal(t, 0, rc, errs)
	for _, want := range []string{"version \"twinblock-v1\";", "# al-extents 101;", "# activity log: clean", "# bits-set 0;"} {
		assert.Contains(t, out, want)
	}

	// Corrupt both superblock slots of r0: every verb reports it and
	// create-md will not overwrite it without --force.
	f, err := disk.OpenFile(disks["r0.img"], disk.FileOptions{})
	require.NoError(t, err)
	sbOff := meta.SuperblockOffset(meta.InternalPlacement, f.Size())
	require.NoError(t, f.WriteAt([]byte{0xff}, sbOff+100, true))
	require.NoError(t, f.WriteAt([]byte{0xff}, sbOff+2048+100, true))
	require.NoError(t, f.Close())
	want := fmt.Sprintf("metadata checksum mismatch on %s at offset %d", disks["r0.img"], sbOff)
	for _, v := range []string{"dump-md", "show-gi", "new-current-uuid", "create-md"} {
		rc, _, errs = verb(v, "r0")
		assert.Equal(t, 1, rc, v)
		assert.Contains(t, errs, want, v)
	}
	rc, _, errs = verb("create-md", "--force", "r0")
	require.Equal(t, 0, rc, errs)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"show-gi", "r9"}, "r9"},
		{[]string{"show-gi", "r0", "--node", "nobody"}, `no "on nobody" section`},
	} {
		rc, _, errs = runCLI(append(append([]string{}, c...), tc.args...)...)
		assert.Equal(t, 1, rc)
		assert.Contains(t, errs, tc.want)
	}
}

func TestDRBDOldOrder(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"primary", "r0"}, []string{"primary", "r0"}},
		{[]string{"--", "--overwrite-data-of-peer", "primary", "r0"}, []string{"primary", "--overwrite-data-of-peer", "r0"}},
		{[]string{"--", "--discard-my-data", "connect", "all"}, []string{"connect", "--discard-my-data", "all"}},
		{[]string{"--", "-c", "x.conf", "--force", "create-md", "r0"}, []string{"create-md", "-c", "x.conf", "--force", "r0"}},
		{[]string{"--", "--force"}, []string{"--force"}},
		{[]string{"--config", "x.conf", "--node", "a", "--", "--overwrite-data-of-peer", "primary", "r0"},
			[]string{"--config", "x.conf", "--node", "a", "primary", "--overwrite-data-of-peer", "r0"}},
		{[]string{"--node", "a", "status"}, []string{"--node", "a", "status"}},
	} {
		assert.Equal(t, tc.want, drbdOldOrder(tc.in), "%v", tc.in)
	}
}

// TestApplyALAndWipeMD: apply-al on a disk whose daemon "crashed" with a
// write in flight marks that write's extent out of sync and leaves the
// log clean; wipe-md asks for "yes", destroys the metadata when told
// so, and create-md then writes new metadata without --force.
func TestApplyALAndWipeMD(t *testing.T) {
	conf, disks := metaFixture(t)
	c := []string{"-c", conf, "--node", "l0"}
	verb := func(args ...string) (int, string, string) {
		return runCLI(append(append([]string{}, args...), c...)...)
	}
	rc, _, errs := verb("create-md", "r0")
	require.Equal(t, 0, rc, errs)

	// Attached, a write begun, and no clean close: a crash.
	f, err := disk.OpenFile(disks["r0.img"], disk.FileOptions{})
	require.NoError(t, err)
	m, err := meta.Open(f, meta.InternalPlacement, meta.Options{Name: disks["r0.img"]})
	require.NoError(t, err)
	require.NoError(t, m.BeginWrite(8<<20, 4096))
	require.NoError(t, f.Close())

	rc, out, errs := verb("apply-al", "r0")
	require.Equal(t, 0, rc, errs)
	assert.Equal(t, "r0: activity log applied: 1 extents marked out of sync; the log is clean\n", out)
	rc, out, errs = verb("dump-md", "r0")
	require.Equal(t, 0, rc, errs)
	assert.Contains(t, out, "# activity log: clean")
	assert.NotContains(t, out, "# bits-set 0;", "the extent of the write in flight is marked")
	rc, out, _ = verb("apply-al", "r0")
	require.Equal(t, 0, rc)
	assert.Contains(t, out, "nothing to apply")

	// wipe-md: refused without "yes", done with --force.
	rc, _, errs = runCLIStdin("no\n", append([]string{"wipe-md", "r0"}, c...)...)
	assert.Equal(t, 1, rc)
	assert.Contains(t, errs, "not confirmed")
	rc, _, errs = verb("show-gi", "r0")
	require.Equal(t, 0, rc, "the metadata survived a refused wipe: %s", errs)
	rc, out, errs = verb("wipe-md", "--force", "r0")
	require.Equal(t, 0, rc, errs)
	assert.Contains(t, out, "r0: metadata on "+disks["r0.img"]+" wiped")
	rc, _, errs = verb("show-gi", "r0")
	assert.Equal(t, 1, rc)
	assert.Contains(t, errs, "no twinblock metadata")
	rc, _, errs = verb("create-md", "r0")
	require.Equal(t, 0, rc, "create-md after wipe-md needs no --force: %s", errs)
}

// TestDryRun: -d/--dry-run, as drbdadm's: a verb that changes state
// says what it would do and does nothing; the daemon is not asked (none
// runs here) and the metadata is not touched.
func TestDryRun(t *testing.T) {
	conf, _ := metaFixture(t)
	c := []string{"-c", conf, "--node", "l0", "--control", filepath.Join(t.TempDir(), "none.sock")}
	verb := func(args ...string) (int, string, string) {
		return runCLI(append(append([]string{}, args...), c...)...)
	}
	rc, _, errs := verb("create-md", "r0")
	require.Equal(t, 0, rc, errs)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-d", "primary", "--force", "r0"}, "dry run, nothing done: twinblock primary r0 --force=true\n"},
		{[]string{"--dry-run", "connect", "--discard-my-data", "r0"}, "dry run, nothing done: twinblock connect r0 --discard-my-data=true\n"},
		{[]string{"-d", "down", "all"}, "dry run, nothing done: twinblock down all\n"},
		{[]string{"-d", "wipe-md", "--force", "r0"}, "dry run, nothing done: twinblock wipe-md r0 --force=true\n"},
		{[]string{"-d", "create-md", "--force", "r0"}, "dry run, nothing done: twinblock create-md r0 --force=true\n"},
		{[]string{"-d", "new-current-uuid", "r0"}, "dry run, nothing done: twinblock new-current-uuid r0\n"},
	} {
		rc, out, errs := verb(tc.args...)
		require.Equal(t, 0, rc, "%v: %s", tc.args, errs)
		assert.Equal(t, tc.want, out, "%v", tc.args)
	}
	// The metadata is the one create-md wrote: the dry wipe and the dry
	// new-current-uuid left it alone.
	rc, out, errs := verb("show-gi", "r0")
	require.Equal(t, 0, rc, errs)
	assert.Contains(t, out, "\n0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0\n")
	// Without -d the daemon is asked, and there is none.
	rc, _, _ = verb("primary", "r0")
	assert.NotEqual(t, 0, rc)
}
