// Package untrusted bounds what a request can put into hostvol's error
// messages and logs: strings from requests (volume IDs, names, paths,
// parameters, tokens) are quoted and cut before they are echoed, so a
// 10 KB volume ID costs a message of a few hundred bytes, not 10 KB per
// answer and per log line, and a newline in it cannot forge a log line.
package untrusted

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxLen is how many bytes of a string Quote keeps: more than any string
// hostvol itself accepts except paths (volume IDs are at most 128 bytes,
// kubelet paths some 150), so only hostile or broken requests are cut.
const MaxLen = 256

// Quote returns s quoted as Go does (%q: control bytes and invalid UTF-8
// escaped, so the message stays one line), cut to its first MaxLen bytes
// (at a character boundary) followed by its full length when it is
// longer: "aaaa"... (10240 bytes).
func Quote(s string) string {
	if len(s) <= MaxLen {
		return strconv.Quote(s)
	}
	cut := MaxLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// Stringer bounds a lazily formatted value (a request in a V(4) log line)
// the same way: its String is cut to max bytes with the full length said.
// String is only called when the line is written.
type Stringer struct {
	V   fmt.Stringer
	Max int
}

func (b Stringer) String() string {
	s := b.V.String()
	if len(s) <= b.Max {
		return s
	}
	cut := b.Max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:cut], len(s))
}
