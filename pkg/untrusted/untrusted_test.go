package untrusted

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestQuote(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string
	}{
		{name: "empty", in: "", want: `""`},
		{name: "volume_id", in: "hv-0123456789abcdef0123456789abcdef", want: `"hv-0123456789abcdef0123456789abcdef"`},
		{name: "control_bytes_escaped", in: "a\nb\x00c", want: `"a\nb\x00c"`},
		{name: "exactly_max", in: strings.Repeat("a", MaxLen), want: strconv.Quote(strings.Repeat("a", MaxLen))},
		{name: "one_over_max", in: strings.Repeat("a", MaxLen+1), want: strconv.Quote(strings.Repeat("a", MaxLen)) + "... (257 bytes)"},
		{name: "ten_kib", in: strings.Repeat("../", 10<<10/3), want: strconv.Quote(strings.Repeat("../", 10<<10/3)[:MaxLen]) + "... (10239 bytes)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Quote(tc.in))
		})
	}
}

// A cut never splits a character: the quoted part is valid UTF-8 and
// has no escape a split would add.
func TestQuoteCutsAtCharacterBoundary(t *testing.T) {
	in := strings.Repeat("a", MaxLen-1) + strings.Repeat("é", 100) // é is 2 bytes
	got := Quote(in)
	quoted, _, ok := strings.Cut(got, "... (")
	require.True(t, ok)
	s, err := strconv.Unquote(quoted)
	require.NoError(t, err)
	require.True(t, utf8.ValidString(s))
	require.Equal(t, strings.Repeat("a", MaxLen-1), s)
	require.True(t, strings.HasSuffix(got, "(455 bytes)"))
}

type str string

func (s str) String() string { return string(s) }

func TestStringer(t *testing.T) {
	require.Equal(t, "short", Stringer{V: str("short"), Max: 10}.String())
	require.Equal(t, "0123456789... (20 bytes)", Stringer{V: str("01234567890123456789"), Max: 10}.String())
}
