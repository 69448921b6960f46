package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/twinblock/twinblock/internal/harness"
	"github.com/twinblock/twinblock/nbd/client"
)

// TestKernelDeviceWithoutModule: `device /dev/nbdN;` on a host without
// the nbd module (this build machine): the promotion succeeds, the NBD
// export is served alone, the daemon warns once, status --json says why
// the device is not attached, and the demotion is not held up. (The
// attach itself runs in the VM: TestKernelDevicePair.)
func TestKernelDeviceWithoutModule(t *testing.T) {
	const dev = "/dev/nbd15"
	if _, err := os.Stat(dev); err == nil {
		t.Skipf("%s exists: the nbd module is loaded here", dev)
	}
	a, b := syncedDaemons(t, harness.Options{DiskSize: 16 << 20, Config: func(v harness.Vars) string {
		c := harness.DefaultConfig(v)
		if v.Self == v.Names[0] {
			c = strings.Replace(c, "on "+v.Names[0]+" { ", "on "+v.Names[0]+" { device "+dev+"; ", 1)
		}
		return c
	}})
	_ = b
	cl, err := client.Dial(context.Background(), a.NBD, client.Options{Export: "r0"})
	require.NoError(t, err, "the export is served without the kernel device")
	require.NoError(t, cl.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, true))
	require.NoError(t, cl.Close())

	out, err := a.TB(10*time.Second, "status", "--json", "r0")
	require.NoError(t, err, out)
	var st []struct {
		Twinblock struct {
			KernelDevice   string `json:"kernel-device"`
			KernelAttached bool   `json:"kernel-attached"`
			KernelError    string `json:"kernel-error"`
		} `json:"twinblock"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Len(t, st, 1)
	require.Equal(t, dev, st[0].Twinblock.KernelDevice)
	require.False(t, st[0].Twinblock.KernelAttached)
	require.Contains(t, st[0].Twinblock.KernelError, "nbd kernel module is not loaded")
	require.Len(t, a.LogSince("kernel device not attached: the nbd module is not loaded"), 1, "one warning")
	a.SkipLog()

	out, err = a.TB(30*time.Second, "secondary", "r0")
	require.NoError(t, err, out)
	out, err = a.TB(30*time.Second, "primary", "r0")
	require.NoError(t, err, out)
	require.Len(t, a.LogSince("kernel device not attached: the nbd module is not loaded"), 0, "no second warning")
}
