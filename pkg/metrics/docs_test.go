package metrics

import (
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/test/testutil"
)

// referencePath is the page that lists every metric once.
const referencePath = "../../docs/reference.md"

// documentedMetric is one row of the reference's metric table.
type documentedMetric struct {
	name string // a metric name, or a prefix when wildcard
	typ  string // counter, gauge, histogram; empty for a wildcard row
	wild bool   // the row names a family of metrics, such as go_*
}

// metricRow matches a row of the metric table: | `name` | type | ...
var metricRow = regexp.MustCompile("^\\| `([a-z_:][a-z0-9_:]*)(\\*?)` \\| ([a-z]*) *\\|")

// documentedMetrics reads the rows of the "## Metrics" section of the
// reference page.
func documentedMetrics(t *testing.T) []documentedMetric {
	t.Helper()
	var out []documentedMetric
	for _, m := range testutil.ReferenceRows(t, referencePath, "Metrics", metricRow) {
		out = append(out, documentedMetric{name: m[1], wild: m[2] == "*", typ: m[3]})
	}
	require.NotEmpty(t, out, "no metric rows in the Metrics section of %s", referencePath)
	return out
}

// servedMetrics gathers every metric family the /metrics endpoint serves,
// with every collector made to produce: a pool, a volume count, a call
// through the interceptor and a scrape of the handler.
func servedMetrics(t *testing.T) map[string]string {
	t.Helper()
	m, h := probedOnce(t, volume.PoolFigures{Name: "default", CapacityBytes: 1 << 30, FreeBytes: 1 << 29, PromisedBytes: 1 << 20})
	code, _ := get(t, h, "/metrics")
	require.Equal(t, http.StatusOK, code)

	mfs, err := m.Registry().Gather()
	require.NoError(t, err)
	out := make(map[string]string, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = strings.ToLower(mf.GetType().String())
	}
	return out
}

// TestReferenceListsEveryMetric keeps docs/reference.md equal to what the
// registry serves: every served metric is listed (by name, or by a
// wildcard row such as go_*), every listed name is served with the listed
// type, and no row is listed twice.
func TestReferenceListsEveryMetric(t *testing.T) {
	docs := documentedMetrics(t)
	served := servedMetrics(t)

	var missing, extra, wrongType, twice []string
	seen := map[string]bool{}
	for _, d := range docs {
		key := d.name
		if d.wild {
			key += "*"
		}
		if seen[key] {
			twice = append(twice, key)
		}
		seen[key] = true
		if d.wild {
			if !slices.ContainsFunc(slices.Collect(maps.Keys(served)), func(n string) bool { return strings.HasPrefix(n, d.name) }) {
				extra = append(extra, key)
			}
			continue
		}
		typ, ok := served[d.name]
		switch {
		case !ok:
			extra = append(extra, d.name)
		case typ != d.typ:
			wrongType = append(wrongType, d.name+": listed as "+d.typ+", served as "+typ)
		}
	}
	for name := range served {
		if !slices.ContainsFunc(docs, func(d documentedMetric) bool {
			return d.name == name && !d.wild || d.wild && strings.HasPrefix(name, d.name)
		}) {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	testutil.RequireListed(t, referencePath+" does not match the registry",
		testutil.Mismatch{What: "served but not listed", Names: missing},
		testutil.Mismatch{What: "listed but not served", Names: extra},
		testutil.Mismatch{What: "listed with the wrong type", Names: wrongType},
		testutil.Mismatch{What: "listed more than once", Names: twice})
}
