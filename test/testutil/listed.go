package testutil

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Mismatch is one way a documented list differs from the real thing: what
// it is ("listed but not served") and the names it applies to.
type Mismatch struct {
	What  string
	Names []string
}

// RequireListed fails the test when any mismatch names something, with
// every such mismatch on a line of its own under title.
func RequireListed(t testing.TB, title string, ms ...Mismatch) {
	t.Helper()
	var problems []string
	for _, m := range ms {
		if len(m.Names) > 0 {
			problems = append(problems, m.What+": "+strings.Join(m.Names, ", "))
		}
	}
	if len(problems) > 0 {
		t.Fatalf("%s:\n%s", title, strings.Join(problems, "\n"))
	}
}

// ReferenceRows returns the submatches of row for every line of the
// section titled "## "+section of the Markdown file at path (up to the
// next "## " heading), in order; the test fails when there is no such
// section.
func ReferenceRows(t testing.TB, path, section string, row *regexp.Regexp) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	_, text, found := strings.Cut(string(b), "\n## "+section+"\n")
	require.True(t, found, "%s has no \"## %s\" section", path, section)
	text, _, _ = strings.Cut(text, "\n## ")
	var out [][]string
	for _, line := range strings.Split(text, "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			out = append(out, m)
		}
	}
	return out
}
