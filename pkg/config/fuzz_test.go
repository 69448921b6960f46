package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fuzzFS is what fuzzed includes can reach: a few files, nothing on disk.
var fuzzFS = mapFS{
	"global.inc": []byte("global { usage-count no; }\n"),
	"net.inc":    []byte("timeout 50;\nko-count 3;\n"),
	"r.res":      []byte("resource inc { disk /d; on x { address 10.9.0.1:1; } on y { address 10.9.0.2:1; } }\n"),
	"self.inc":   []byte("include \"self.inc\";\n"),
}

// FuzzParse: parsing never panics and fails only with an *Error; what
// parses dumps to text that parses again, to an equal configuration with
// the same dump.
func FuzzParse(f *testing.F) {
	var seeds []string
	seeds = append(seeds, goodFiles...)
	for _, pattern := range []string{"testdata/*.conf", "testdata/*/*.conf", "testdata/*/*/*.conf", "testdata/*/*/*.res"} {
		m, _ := filepath.Glob(pattern)
		seeds = append(seeds, m...)
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, src := range goodSources {
		f.Add([]byte(src))
	}
	for _, tc := range badCases {
		f.Add([]byte(tc.src))
	}
	f.Add([]byte(`include "*.inc"; include "r.res"; resource r { net { include "net.inc"; } disk /d; on a { address 10.0.0.1:1; } on b { address 10.0.0.2:1; } }`))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := load(fuzzFS, "fuzz.conf", src)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not an *Error: %v", err, err)
			}
			return
		}
		var b1 bytes.Buffer
		if err := c.Dump(&b1); err != nil {
			t.Fatal(err)
		}
		c2, err := load(mapFS{}, "fuzz.conf", b1.Bytes())
		if err != nil {
			t.Fatalf("the dump does not parse: %v\n%s", err, b1.String())
		}
		if body1, body2 := dumpBody(t, c), dumpBody(t, c2); body1 != body2 {
			t.Fatalf("the dump of the dump differs:\n%s\n---\n%s", body1, body2)
		}
		checkRoundTrip(t, mapFS{}, c)
	})
}
