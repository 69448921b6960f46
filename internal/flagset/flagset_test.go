package flagset

import (
	"testing"

	"github.com/stretchr/testify/require"
)

type bits uint32

var names = []Name[bits]{{1, "one"}, {4, "four"}, {2, "two"}}

func TestString(t *testing.T) {
	tests := []struct {
		f    bits
		want string
	}{
		{0, "none"},
		{1, "one"},
		{7, "one|four|two"},
		{1 | 8 | 16, "one|0x18"},
		{32, "0x20"},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, String(tc.f, names, "|"), "%#x", tc.f)
	}
}
