package params

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		in      map[string]string
		want    Params
		wantErr bool
	}{
		{name: "defaults", in: nil, want: Params{Type: volume.KindDir, Pool: "default", SizeLimit: volume.SizeLimitRequired}},
		{name: "explicit", in: map[string]string{"type": "dir", "pool": "fast-1"}, want: Params{Type: volume.KindDir, Pool: "fast-1", SizeLimit: volume.SizeLimitRequired}},
		{name: "provisioner_metadata", in: map[string]string{KeyPVCName: "data", KeyPVCNamespace: "ns", KeyPVName: "pvc-1"},
			want: Params{Type: volume.KindDir, Pool: "default", PVCName: "data", PVCNamespace: "ns", SizeLimit: volume.SizeLimitRequired}},
		{name: "size_limit_optional", in: map[string]string{"sizeLimit": "optional"}, want: Params{Type: volume.KindDir, Pool: "default", SizeLimit: volume.SizeLimitOptional}},
		{name: "size_limit_required", in: map[string]string{"sizeLimit": "required"}, want: Params{Type: volume.KindDir, Pool: "default", SizeLimit: volume.SizeLimitRequired}},
		{name: "inode_limit", in: map[string]string{"inodeLimit": "10000"}, want: Params{Type: volume.KindDir, Pool: "default", SizeLimit: volume.SizeLimitRequired, InodeLimit: 10000}},
		{name: "size_limit_unknown", in: map[string]string{"sizeLimit": "soft"}, wantErr: true},
		{name: "size_limit_case", in: map[string]string{"sizeLimit": "Optional"}, wantErr: true},
		{name: "size_limit_empty", in: map[string]string{"sizeLimit": ""}, wantErr: true},
		{name: "size_limit_key_case", in: map[string]string{"sizelimit": "optional"}, wantErr: true},
		{name: "inode_limit_zero", in: map[string]string{"inodeLimit": "0"}, wantErr: true},
		{name: "inode_limit_negative", in: map[string]string{"inodeLimit": "-5"}, wantErr: true},
		{name: "inode_limit_suffix", in: map[string]string{"inodeLimit": "10k"}, wantErr: true},
		{name: "inode_limit_overflow", in: map[string]string{"inodeLimit": "99999999999999999999"}, wantErr: true},
		{name: "unknown_key", in: map[string]string{"size": "1Gi"}, wantErr: true},
		{name: "typo_key", in: map[string]string{"Pool": "default"}, wantErr: true},
		{name: "unknown_type", in: map[string]string{"type": "nfs"}, wantErr: true},
		{name: "empty_type", in: map[string]string{"type": ""}, wantErr: true},
		{name: "pool_traversal", in: map[string]string{"pool": "../etc"}, wantErr: true},
		{name: "pool_empty", in: map[string]string{"pool": ""}, wantErr: true},
		{name: "pool_nul", in: map[string]string{"pool": "a\x00b"}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func withInodes(p Params, n int64) Params {
	p.InodeLimit = n
	return p
}

func TestParseInline(t *testing.T) {
	pod := map[string]string{
		KeyPodName: "web-0", KeyPodNamespace: "shop", KeyPodUID: "u", KeyServiceAccountName: "default",
		KeyServiceAccountToks: "{}", KeyEphemeral: "true",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range pod {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	base := Params{Type: volume.KindDir, Pool: "default", SizeLimit: volume.SizeLimitRequired}
	loop := base
	loop.Type = volume.KindLoop
	cases := []struct {
		name    string
		in      map[string]string
		want    Inline
		wantErr bool
	}{
		{name: "pod_keys_only", in: with(), want: Inline{Params: base, PodName: "web-0", PodNamespace: "shop"}},
		{name: "size_binary", in: with("type", "loop", "size", "1Gi"), want: Inline{Params: loop, SizeBytes: 1 << 30, PodName: "web-0", PodNamespace: "shop"}},
		{name: "size_decimal", in: with("type", "loop", "size", "500M"), want: Inline{Params: loop, SizeBytes: 500e6, PodName: "web-0", PodNamespace: "shop"}},
		{name: "size_fraction_whole", in: with("type", "loop", "size", "1.5Gi"), want: Inline{Params: loop, SizeBytes: 3 << 29, PodName: "web-0", PodNamespace: "shop"}},
		{name: "size_fraction_of_byte", in: with("type", "loop", "size", "1.5"), wantErr: true},
		{name: "size_milli", in: with("type", "loop", "size", "100m"), wantErr: true},
		{name: "size_zero", in: with("size", "0"), wantErr: true},
		{name: "size_negative", in: with("size", "-1Mi"), wantErr: true},
		{name: "size_garbage", in: with("size", "lots"), wantErr: true},
		{name: "size_int64_max", in: with("size", "9223372036854775807"), wantErr: true},
		{name: "size_overflow", in: with("size", "100Ei"), wantErr: true},
		{name: "unknown_key", in: with("sise", "1Gi"), wantErr: true},
		{name: "claim_key", in: with(KeyPVCName, "data"), wantErr: true},
		{name: "class_key_checked", in: with("type", "nfs"), wantErr: true},
		// Pod authors are bounded by the admin's policy (docs/security.md).
		{name: "size_limit_never_allowed", in: with("sizeLimit", "optional"), wantErr: true},
		{name: "block_rwx_never_allowed", in: with("allowBlockRWX", "true"), wantErr: true},
		{name: "size_above_max", in: with("type", "loop", "size", "5Gi"), wantErr: true},
		{name: "size_at_max", in: with("type", "loop", "size", "4Gi"), want: Inline{Params: loop, SizeBytes: 4 << 30, PodName: "web-0", PodNamespace: "shop"}},
		{name: "pool_not_allowed", in: with("pool", "fast"), wantErr: true},
		{name: "inode_limit_allowed", in: with("inodeLimit", "100"), want: Inline{Params: withInodes(base, 100), PodName: "web-0", PodNamespace: "shop"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseInline(tc.in, DefaultInlinePolicy())
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	require.True(t, IsEphemeral(pod))
	require.False(t, IsEphemeral(map[string]string{KeyEphemeral: "false"}))

	// An admin's narrower policy.
	pol := InlinePolicy{Pools: []string{"scratch"}, Attributes: []string{KeySize}, MaxBytes: 1 << 30, MaxTotalBytes: 4 << 30}
	_, err := ParseInline(with("type", "loop"), pol)
	require.ErrorContains(t, err, "may not be set")
	_, err = ParseInline(with("size", "2Gi"), pol)
	require.ErrorIs(t, err, ErrInlineTooLarge)
	_, err = ParseInline(with("size", "1Gi"), pol)
	require.ErrorContains(t, err, `pool "default" may not hold inline volumes`)
	_, err = ParseInline(with(), InlinePolicy{})
	require.ErrorIs(t, err, ErrInlineOff)
	require.False(t, IsEphemeral(map[string]string{KeyEphemeral: "false"}))
	require.False(t, IsEphemeral(nil))
}
