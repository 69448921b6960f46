package integration

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/pkg/backup"
)

// bkWrite writes a random block at each of blocks through node n's
// export, flushes, closes, and returns what each block received.
func (p *pair) bkWrite(t *testing.T, n string, blocks []int64) map[int64][]byte {
	t.Helper()
	c := p.dialNBD(t, n)
	defer c.Close()
	return writeAndFlush(t, c, blocks)
}

func bkBlock(data []byte, b int64) []byte { return data[b*4096 : (b+1)*4096] }

// bkBackups lists the discarded-blocks images in dir.
func bkBackups(t *testing.T, dir string) []string {
	t.Helper()
	imgs, err := filepath.Glob(filepath.Join(dir, "r0-discarded-*.img"))
	require.NoError(t, err)
	return imgs
}

var reBackupSaved = regexp.MustCompile(`discarded blocks saved: (\d+) blocks in (\S+?\.img)\b`)

// TestSplitBrainBackupAndRestore: with backup-discarded yes, a split
// brain's victim (b, reconnected with --discard-my-data) saves the old
// content of every block its resync overwrites; the survivor's data
// wins on both nodes; then the undo: b made Primary runs
// restore-discarded with its file, and both nodes hold b's pre-discard
// data again, replicated through the export.
func TestSplitBrainBackupAndRestore(t *testing.T) {
	const size = 16 << 20
	p := newPairOpts(t, pairOpts{size: size, net: "backup-discarded yes;"})
	_, snap := p.dataArea(t, "a")
	dataSize := int64(snap.Superblock.DataSize)
	nblocks := int(dataSize / 4096)

	p.upConnected(t)
	p.tb(t, "a", "primary", "--force", "r0")
	p.waitSynced(t, 60*time.Second)

	// 64 blocks on each side, 16 of them on both; all of them hold data
	// from before the split (written on a, replicated).
	perm := rand.Perm(nblocks)[:112]
	var all, onA, onB []int64
	for _, b := range perm {
		all = append(all, int64(b))
	}
	onA, onB = all[:64], all[48:]
	onlyA := all[:48]
	pre := p.bkWrite(t, "a", all)
	assert.Empty(t, bkBackups(t, p.dir), "connections that discard nothing leave no file")

	// The split: b leaves and is promoted; both write.
	p.tb(t, "b", "disconnect", "r0")
	p.waitFor(t, "b", "cstate", "StandAlone", 10*time.Second)
	p.waitFor(t, "a", "cstate", "WFConnection", 10*time.Second)
	p.tb(t, "b", "primary", "r0")
	p.waitFor(t, "b", "role", "Primary/Unknown", 5*time.Second)
	wroteA := p.bkWrite(t, "a", onA)
	wroteB := p.bkWrite(t, "b", onB)
	victim := p.liveData(t, "b", dataSize) // b's data before the discard
	for _, b := range onlyA {
		require.Equal(t, pre[b], bkBlock(victim, b), "block %d: b holds the pre-split content", b)
	}

	// DRBD's recovery: b is the victim.
	markA, markB := len(p.Node("a").Log()), len(p.Node("b").Log())
	p.tb(t, "b", "secondary", "r0")
	p.tb(t, "b", "connect", "--discard-my-data", "r0")
	p.waitSynced(t, 60*time.Second)
	p.waitFor(t, "a", "role", "Primary/Secondary", 5*time.Second)
	logB := p.Node("b").Log()[markB:]
	assert.Contains(t, logB, "Split-Brain detected, manually solved. Sync from peer node")
	assert.Contains(t, p.Node("a").Log()[markA:], "Split-Brain detected, manually solved. Sync from this node")

	// The survivor's data on both nodes.
	da, db := p.liveData(t, "a", dataSize), p.liveData(t, "b", dataSize)
	require.True(t, bytes.Equal(da, db), "the data areas differ after the recovery")
	for _, b := range onA {
		require.Equal(t, wroteA[b], bkBlock(db, b), "block %d: a's write won on b", b)
	}

	// The backup: b's content of every block the resync overwrote.
	imgs := bkBackups(t, p.dir)
	require.Len(t, imgs, 1, "one backup file in b's metadata directory")
	img := imgs[0]
	assert.Regexp(t, `/r0-discarded-\d{8}T\d{6}Z\.img$`, img)
	var m []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m = reBackupSaved.FindStringSubmatch(p.Node("b").Log()[markB:]); m != nil {
			break
		}
	}
	require.NotNil(t, m, "no \"discarded blocks saved\" line on b:\n%s", p.Node("b").Log()[markB:])
	assert.Equal(t, img, m[2])
	assert.Contains(t, logB, "saving the blocks this node discards to "+img)
	x, err := backup.ReadIndex(img + ".blocks")
	require.NoError(t, err)
	assert.True(t, x.Complete, "the index is complete")
	assert.Contains(t, x.Header, "resource r0, node b")
	saved := map[int64]bool{}
	for _, r := range x.Runs {
		require.Zero(t, r.Offset%4096)
		require.Zero(t, r.Length%4096)
		for o := r.Offset; o < r.Offset+r.Length; o += 4096 {
			assert.False(t, saved[o/4096], "block %d saved twice", o/4096)
			saved[o/4096] = true
		}
	}
	n, _ := strconv.Atoi(m[1])
	assert.Equal(t, len(saved), n, "the log counts the blocks of the index")
	touched := map[int64]bool{}
	for _, b := range all {
		touched[b] = true
	}
	assert.Equal(t, touched, saved, "exactly the blocks written on either side since the split were overwritten, so saved")
	image, err := os.ReadFile(img)
	require.NoError(t, err)
	require.Len(t, image, int(dataSize), "the image is the data area's size")
	for b := range saved {
		require.Equal(t, bkBlock(victim, b), bkBlock(image, b), "block %d: the image holds b's content before the discard", b)
	}
	for _, b := range onB {
		require.Equal(t, wroteB[b], bkBlock(image, b), "block %d: b's own write is in the image", b)
	}

	// Restore-discarded needs a Primary.
	out, err := p.tbErr("b", "restore-discarded", "r0", img)
	require.Error(t, err, "restore-discarded on the Secondary: %s", out)
	assert.Contains(t, out, "must be Primary")
	assert.NotContains(t, strings.TrimSpace(out), "\n", "one line")

	// The undo: b's data should have won. b becomes Primary and writes its
	// saved blocks back through its export (and so to a).
	p.tb(t, "a", "secondary", "r0")
	p.tb(t, "b", "primary", "r0")
	p.waitFor(t, "b", "role", "Primary/Secondary", 5*time.Second)
	p.waitFor(t, "a", "role", "Secondary/Primary", 5*time.Second)
	out = p.tb(t, "b", "restore-discarded", "r0", img)
	blocks := len(saved)
	assert.Equal(t, "restored "+strconv.Itoa(blocks)+" blocks ("+strconv.Itoa(blocks*4096)+" bytes) from "+img, out)
	p.waitSynced(t, 10*time.Second)

	da, db = p.liveData(t, "a", dataSize), p.liveData(t, "b", dataSize)
	for _, b := range onB {
		require.Equal(t, wroteB[b], bkBlock(db, b), "block %d: b's write is back on b", b)
		require.Equal(t, wroteB[b], bkBlock(da, b), "block %d: b's write is back on a", b)
	}
	for _, b := range onlyA {
		require.Equal(t, pre[b], bkBlock(db, b), "block %d: only a wrote it: b's version, the pre-split content", b)
		require.Equal(t, pre[b], bkBlock(da, b), "block %d: on a too", b)
	}
	require.True(t, bytes.Equal(da, victim), "a's data area is b's from before the discard")
	require.True(t, bytes.Equal(db, victim), "b's data area is its own from before the discard")

	// Restoring wrote through b's export as a Primary: nothing was
	// discarded, so no new backup.
	assert.Len(t, bkBackups(t, p.dir), 1)
	data := p.equalData(t)
	require.True(t, bytes.Equal(data, victim))
}
