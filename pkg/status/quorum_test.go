package status

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestQuorumInEveryFormat: a quorum resource shows its group in each
// output; a resource without quorum shows nothing new (quorum:yes as
// DRBD with quorum off, only with verbose).
func TestQuorumInEveryFormat(t *testing.T) {
	primary, _ := connectedPair()
	tests := []struct {
		name     string
		q        *QuorumStatus
		status   string // in the non-verbose status ("" none)
		verbose  string
		procLine string // "" none
		jsonQ    bool
	}{
		{name: "no quorum", verbose: " quorum:yes", jsonQ: true},
		{name: "in the majority", q: &QuorumStatus{Have: true, Epoch: 2, Primary: "a", Leader: "w"},
			verbose: " quorum:yes", procLine: "\tquorum: yes, epoch 2, Primary a, leader w\n", jsonQ: true},
		{name: "out of it", q: &QuorumStatus{Epoch: 2, Primary: "a", Outdated: true},
			status: " quorum:no", verbose: " quorum:no", procLine: "\tquorum: no, epoch 2, Primary a, leader unknown, this node Outdated\n"},
		{name: "no Primary", q: &QuorumStatus{Have: true, Epoch: 3, Leader: "a"},
			verbose: " quorum:yes", procLine: "\tquorum: yes, epoch 3, Primary none, leader a\n", jsonQ: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := primary
			r.Quorum = tc.q
			got := statusText(t, false, r)
			if tc.status == "" {
				require.NotContains(t, got, "quorum:")
			} else {
				require.Contains(t, got, tc.status)
			}
			require.Contains(t, statusText(t, true, r), tc.verbose)

			var proc bytes.Buffer
			require.NoError(t, WriteProcDRBD(&proc, "0.1.0", []Resource{r}))
			if tc.procLine == "" {
				require.NotContains(t, proc.String(), "quorum")
			} else {
				require.Contains(t, proc.String(), tc.procLine)
				// The scrapers of the other lines read nothing from it.
				require.True(t, strings.HasPrefix(tc.procLine, "\t"))
			}

			var js bytes.Buffer
			require.NoError(t, WriteJSON(&js, []Resource{r}))
			var back []JSONResource
			require.NoError(t, json.Unmarshal(js.Bytes(), &back))
			require.Equal(t, tc.jsonQ, back[0].Devices[0].Quorum)
			if tc.q == nil {
				require.Nil(t, back[0].Twinblock.Quorum)
				return
			}
			require.Equal(t, &JSONQuorum{Quorum: tc.q.Have, Epoch: tc.q.Epoch, Primary: tc.q.Primary, Leader: tc.q.Leader, Outdated: tc.q.Outdated}, back[0].Twinblock.Quorum)
		})
	}
}
