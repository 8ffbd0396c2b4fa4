package volumeid

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFromNameIsStableAndValid(t *testing.T) {
	a := FromName("pvc-0d3c5a1e")
	require.Equal(t, a, FromName("pvc-0d3c5a1e"))
	require.NotEqual(t, a, FromName("pvc-0d3c5a1f"))
	require.Len(t, a, Len)
	require.NoError(t, Validate(a))
}

func TestValidate(t *testing.T) {
	good := FromName("x")
	cases := []struct {
		name string
		id   string
		want error
	}{
		{name: "generated", id: good, want: nil},
		{name: "empty", id: "", want: ErrMalformed},
		{name: "dot_dot", id: "..", want: ErrMalformed},
		{name: "dot", id: ".", want: ErrMalformed},
		{name: "traversal", id: "../../etc", want: ErrMalformed},
		{name: "embedded_dot_dot", id: "hv-..", want: ErrMalformed},
		{name: "absolute", id: "/etc/passwd", want: ErrMalformed},
		{name: "slash", id: "hv-00/11", want: ErrMalformed},
		{name: "backslash", id: `hv-00\11`, want: ErrMalformed},
		{name: "nul", id: good[:10] + "\x00" + good[11:], want: ErrMalformed},
		{name: "newline", id: good + "\n", want: ErrMalformed},
		{name: "non_ascii", id: "hv-é", want: ErrMalformed},
		{name: "over_long", id: strings.Repeat("a", MaxLen+1), want: ErrMalformed},
		{name: "unknown_format", id: "reallyfakevolumeid", want: ErrForeign},
		{name: "upper_hex", id: strings.ToUpper(good), want: ErrForeign},
		{name: "short", id: good[:Len-1], want: ErrForeign},
		{name: "long", id: good + "0", want: ErrForeign},
		{name: "non_hex", id: good[:Len-1] + "g", want: ErrForeign},
		{name: "wrong_prefix", id: "hx-" + good[3:], want: ErrForeign},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.id)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.True(t, errors.Is(err, tc.want), "got %v", err)
		})
	}
}

func FuzzValidate(f *testing.F) {
	f.Add("hv-0123456789abcdef0123456789abcdef")
	f.Add("../x")
	f.Fuzz(func(t *testing.T, id string) {
		if Validate(id) == nil {
			// Anything accepted must be a single, plain path element.
			require.Len(t, id, Len)
			require.NotContains(t, id, "/")
			require.NotContains(t, id, "..")
		}
	})
}

func TestSnapshotIDs(t *testing.T) {
	s := SnapshotFromName("node-a", "snapshot-0d3c5a1e")
	require.Equal(t, s, SnapshotFromName("node-a", "snapshot-0d3c5a1e"))
	require.NotEqual(t, s, SnapshotFromName("node-a", "snapshot-0d3c5a1f"))
	require.Len(t, s, Len)
	require.Equal(t, NodeTag("node-a"), SnapshotNodeTag(s))
	other := SnapshotFromName("node-b", "snapshot-0d3c5a1e")
	require.NotEqual(t, NodeTag("node-a"), SnapshotNodeTag(other), "another node, another tag")
	require.Equal(t, s[len(snapshotPrefix)+nodeTagLen:], other[len(snapshotPrefix)+nodeTagLen:], "the name's part does not depend on the node")
	require.True(t, strings.HasPrefix(s, "hs-"))
	require.NoError(t, ValidateSnapshot(s))
	require.ErrorIs(t, Validate(s), ErrForeign, "a snapshot ID is not a volume ID")

	v := "hv-" + s[len(snapshotPrefix):]
	require.NoError(t, Validate(v))
	require.ErrorIs(t, ValidateSnapshot(v), ErrForeign, "a volume ID is not a snapshot ID")

	for _, bad := range []string{"", "..", "hs-../x", "hs-00/11", strings.Repeat("a", MaxLen+1)} {
		require.ErrorIs(t, ValidateSnapshot(bad), ErrMalformed, "%q", bad)
	}
	require.ErrorIs(t, ValidateSnapshot(strings.ToUpper(s)), ErrForeign)
}
