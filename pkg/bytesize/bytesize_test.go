package bytesize_test

import (
	"flag"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/bytesize"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    int64
		wantErr string // a part of the message; "" for success
	}{
		{name: "plain_bytes", in: "1073741824", want: 1 << 30},
		{name: "zero", in: "0", want: 0},
		{name: "binary_kibi", in: "1Ki", want: 1024},
		{name: "binary_mebi", in: "512Mi", want: 512 << 20},
		{name: "binary_gibi", in: "1Gi", want: 1 << 30},
		{name: "binary_tebi", in: "2Ti", want: 2 << 40},
		{name: "binary_fraction_whole", in: "1.5Gi", want: 3 << 29},
		{name: "decimal_kilo", in: "10k", want: 10000},
		{name: "decimal_mega", in: "5M", want: 5e6},
		{name: "decimal_giga", in: "1G", want: 1e9},
		{name: "decimal_fraction_whole", in: "1.5k", want: 1500},
		{name: "exponent", in: "1e3", want: 1000},
		{name: "milli_whole", in: "1000m", want: 1},
		{name: "plus_sign", in: "+1Gi", want: 1 << 30},
		{name: "exbi_fits", in: "7Ei", want: 7 << 60},
		{name: "largest", in: "9223372036854775806", want: math.MaxInt64 - 1},

		{name: "empty", in: "", wantErr: "want a whole number"},
		{name: "garbage", in: "lots", wantErr: "want a whole number"},
		{name: "upper_kilo", in: "10K", wantErr: "want a whole number"},
		{name: "unknown_suffix", in: "1Xi", wantErr: "want a whole number"},
		{name: "leading_space", in: " 1Gi", wantErr: "want a whole number"},
		{name: "trailing_newline", in: "1Gi\n", wantErr: "want a whole number"},
		{name: "nul", in: "1\x00Gi", wantErr: "want a whole number"},
		{name: "hex", in: "0x10", wantErr: "want a whole number"},
		{name: "underscore", in: "1_000", wantErr: "want a whole number"},
		{name: "suffix_twice", in: "1GiGi", wantErr: "want a whole number"},
		{name: "non_ascii_digit", in: "١Gi", wantErr: "want a whole number"},
		{name: "nan", in: "NaN", wantErr: "want a whole number"},
		{name: "negative", in: "-1", wantErr: "negative"},
		{name: "negative_quantity", in: "-1Mi", wantErr: "negative"},
		{name: "fraction", in: "1.5", wantErr: "not a whole number"},
		{name: "half", in: "0.5", wantErr: "not a whole number"},
		{name: "milli", in: "100m", wantErr: "not a whole number"},
		{name: "nano", in: "1n", wantErr: "not a whole number"},
		{name: "binary_fraction", in: "1.0001Ki", wantErr: "not a whole number"},
		{name: "int64_max", in: "9223372036854775807", wantErr: "too large"},
		{name: "int64_max_plus_one", in: "9223372036854775808", wantErr: "too large"},
		{name: "exbi_overflow", in: "8Ei", wantErr: "too large"},
		{name: "exbi_far_overflow", in: "100Ei", wantErr: "too large"},
		{name: "exponent_overflow", in: "1e19", wantErr: "too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bytesize.Parse(tc.in)
			if tc.wantErr == "" {
				require.NoError(t, err)
				require.Equal(t, tc.want, got)
				return
			}
			require.Error(t, err)
			require.Zero(t, got)
			msg := err.Error()
			require.Contains(t, msg, tc.wantErr)
			require.Contains(t, msg, strconv.Quote(tc.in), "the whole input is echoed")
			require.Contains(t, msg, bytesize.Forms, "the accepted forms are named")
		})
	}
}

func TestParseBoundsHostileInput(t *testing.T) {
	in := strings.Repeat("9", 10<<10) + "Gi"
	_, err := bytesize.Parse(in)
	require.Error(t, err)
	require.Less(t, len(err.Error()), 1024, "a 10 KB size costs a short message")
	require.NotContains(t, err.Error(), "\n")
}

// A flag's value prints as a quantity that Parse reads back as the same
// number of bytes, so --help shows a default one can type.
func TestVarPrintsWhatParseReads(t *testing.T) {
	for _, n := range []int64{0, 1, 1000, 1500, 1024, 3 << 29, 1 << 30, 4 << 30, 1e9, math.MaxInt64 - 1} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		v := n
		bytesize.Var(fs, &v, "size", "")
		s := fs.Lookup("size").DefValue
		got, err := bytesize.Parse(s)
		require.NoError(t, err, s)
		require.Equal(t, n, got, s)
	}
}

func TestVar(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	n := int64(4 << 30)
	bytesize.Var(fs, &n, "max-size", "largest volume")
	require.Equal(t, "4Gi", fs.Lookup("max-size").DefValue)
	require.NoError(t, fs.Parse([]string{"--max-size=1.5Gi"}))
	require.Equal(t, int64(3<<29), n)
	require.Error(t, fs.Parse([]string{"--max-size=-1"}))
	require.Equal(t, int64(3<<29), n, "a refused value leaves the flag as it was")
}
