package main

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// runMainEnv makes the test binary run hostvol's main instead of the tests,
// so a test can run the real command line (see TestMain).
const runMainEnv = "HOSTVOL_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// referencePath is the page that lists every flag once.
const referencePath = "../../docs/reference.md"

var (
	// helpFlag matches a flag line of Go's flag.PrintDefaults: "  -name ...".
	helpFlag = regexp.MustCompile(`^  -([A-Za-z0-9_-]+)`)
	// referenceFlag matches a row of a flag table: | `--name ...` | ...
	referenceFlag = regexp.MustCompile("^\\| `--([A-Za-z0-9_-]+)")
)

// helpFlags runs `hostvol --help` (this test binary as hostvol) and returns
// the flags it lists.
func helpFlags(t *testing.T) []string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "--help")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "hostvol --help:\n%s", out)
	require.Contains(t, string(out), "Usage: hostvol", "not hostvol's --help:\n%s", out)
	var flags []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := helpFlag.FindStringSubmatch(line); m != nil {
			flags = append(flags, m[1])
		}
	}
	require.NotEmpty(t, flags, "no flags in hostvol --help:\n%s", out)
	return flags
}

// documentedFlags returns the flags of the rows of every table in the
// "## Flags" section of the reference page, in order, duplicates kept.
func documentedFlags(t *testing.T) []string {
	t.Helper()
	var flags []string
	for _, m := range testutil.ReferenceRows(t, referencePath, "Flags", referenceFlag) {
		flags = append(flags, m[1])
	}
	require.NotEmpty(t, flags, "no flag rows in the Flags section of %s", referencePath)
	return flags
}

// TestReferenceListsEveryFlag keeps docs/reference.md equal to what
// `hostvol --help` shows: every flag listed, none that does not exist,
// none twice.
func TestReferenceListsEveryFlag(t *testing.T) {
	help := helpFlags(t)
	docs := documentedFlags(t)

	var missing, extra, twice []string
	for _, f := range help {
		if !slices.Contains(docs, f) {
			missing = append(missing, "--"+f)
		}
	}
	seen := map[string]bool{}
	for _, f := range docs {
		if !slices.Contains(help, f) {
			extra = append(extra, "--"+f)
		}
		if seen[f] {
			twice = append(twice, "--"+f)
		}
		seen[f] = true
	}
	testutil.RequireListed(t, referencePath+" does not match hostvol --help",
		testutil.Mismatch{What: "in hostvol --help but not listed", Names: missing},
		testutil.Mismatch{What: "listed but not in hostvol --help", Names: extra},
		testutil.Mismatch{What: "listed more than once", Names: twice})
}
