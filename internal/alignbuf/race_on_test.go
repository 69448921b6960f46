//go:build race

package alignbuf

const raceEnabled = true
