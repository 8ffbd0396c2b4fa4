package volume

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

const (
	kib = int64(1) << 10
	mb  = int64(1) << 20
	gib = int64(1) << 30
)

// The thresholds as figures, without a filesystem to fill: test/health
// fills real ones.
func TestExhausted(t *testing.T) {
	cases := []struct {
		name string
		fs   pool.FSStats
		want bool
	}{
		{name: "plenty", fs: pool.FSStats{TotalBytes: 64 * mb, AvailableBytes: 32 * mb, TotalInodes: 1000, FreeInodes: 900}},
		{name: "just_over_1_mib", fs: pool.FSStats{TotalBytes: 64 * mb, AvailableBytes: mb, TotalInodes: 1000, FreeInodes: 900}},
		// What ext4 shows after ENOSPC: 104 KiB still "available".
		{name: "ext4_after_enospc", fs: pool.FSStats{TotalBytes: 271 * mb, AvailableBytes: 104 * kib, TotalInodes: 76912, FreeInodes: 76900}, want: true},
		{name: "zero", fs: pool.FSStats{TotalBytes: 64 * mb, TotalInodes: 1000, FreeInodes: 900}, want: true},
		{name: "no_inodes", fs: pool.FSStats{TotalBytes: 64 * mb, AvailableBytes: 32 * mb, TotalInodes: 1000}, want: true},
		{name: "no_inode_count", fs: pool.FSStats{TotalBytes: 64 * mb, AvailableBytes: 32 * mb}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, exhausted(tc.fs) != "", "message %q", exhausted(tc.fs))
		})
	}
}

func TestNearlyFull(t *testing.T) {
	cases := []struct {
		name string
		fs   pool.FSStats
		want bool
	}{
		{name: "empty", fs: pool.FSStats{TotalBytes: 100 * gib, AvailableBytes: 100 * gib}},
		{name: "six_percent_left", fs: pool.FSStats{TotalBytes: 100 * gib, AvailableBytes: 6 * gib}},
		{name: "four_percent_left", fs: pool.FSStats{TotalBytes: 100 * gib, AvailableBytes: 4 * gib}, want: true},
		{name: "small_pool_four_percent", fs: pool.FSStats{TotalBytes: 64 * mb, AvailableBytes: 2 * mb}, want: true},
		{name: "huge_pool_20_gib_left", fs: pool.FSStats{TotalBytes: 10 << 40, AvailableBytes: 20 * gib}},
		{name: "huge_pool_9_gib_left", fs: pool.FSStats{TotalBytes: 10 << 40, AvailableBytes: 9 * gib}, want: true},
		{name: "inodes_four_percent", fs: pool.FSStats{TotalBytes: 100 * gib, AvailableBytes: 50 * gib, TotalInodes: 1000, FreeInodes: 40}, want: true},
		{name: "many_inodes_2m_free", fs: pool.FSStats{TotalBytes: 100 * gib, AvailableBytes: 50 * gib, TotalInodes: 600 << 20, FreeInodes: 2 << 20}},
		{name: "no_figures", fs: pool.FSStats{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, nearlyFull(tc.fs) != "", "message %q", nearlyFull(tc.fs))
		})
	}
}

func TestPoolConditions(t *testing.T) {
	p := &pool.Pool{Spec: pool.Spec{Name: "fast", Path: "/srv/fast"}}
	roomy := pool.FSStats{TotalBytes: 100 * gib, AvailableBytes: 50 * gib}
	cases := []struct {
		name  string
		check pool.Check
		want  []string
	}{
		{name: "healthy", check: pool.Check{FS: roomy}},
		{name: "missing_hides_the_rest", check: pool.Check{Problem: `pool "fast": path /srv/fast does not exist`, ReadOnly: true}, want: []string{"Inaccessible/PoolMissing"}},
		{name: "read_only", check: pool.Check{ReadOnly: true, FS: roomy}, want: []string{"Degraded/PoolReadOnly"}},
		{name: "read_only_and_full", check: pool.Check{ReadOnly: true, FS: pool.FSStats{TotalBytes: gib}}, want: []string{"Degraded/PoolReadOnly", "Degraded/PoolNearlyFull"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range poolConditions(p, tc.check) {
				got = append(got, c.Severity.String()+"/"+c.Reason)
				require.Contains(t, c.Message, "fast")
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestConditionsOnePerReason(t *testing.T) {
	var cs conditions
	cs.add(Degraded, ReasonFilesystemReadOnly, "staging %s", "a")
	cs.add(Degraded, ReasonFilesystemReadOnly, "target %s", "b")
	cs.add(Inaccessible, ReasonDataMissing, "gone")
	require.Len(t, cs, 2, "CSI forbids two entries with one (status, reason)")
	require.Equal(t, "staging a", cs[0].Message, "the first one found is kept")
}

func TestAllReadOnly(t *testing.T) {
	require.False(t, allReadOnly(nil), "no publish asked for read-only")
	require.True(t, allReadOnly(map[string]target{"/a": {ReadOnly: true}, "/b": {ReadOnly: true}}))
	require.False(t, allReadOnly(map[string]target{"/a": {ReadOnly: true}, "/b": {}}))
}

func TestFmtBytes(t *testing.T) {
	require.Equal(t, "512 B", fmtBytes(512))
	require.Equal(t, "104.0 KiB", fmtBytes(104*kib))
	require.Equal(t, "64.0 MiB", fmtBytes(64*mb))
	require.Equal(t, "1.5 GiB", fmtBytes(3*gib/2))
}
