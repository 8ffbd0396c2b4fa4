package testutil

import (
	"strings"
	"testing"
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
