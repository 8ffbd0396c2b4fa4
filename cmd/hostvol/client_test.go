package main

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/params"
)

func TestListRow(t *testing.T) {
	cases := []struct {
		name string
		vol  *csi.Volume
		want string
	}{
		{
			name: "volume",
			vol: &csi.Volume{VolumeId: "hv-1", CapacityBytes: 1024, VolumeContext: map[string]string{"pool": "default"},
				AccessibleTopology: []*csi.Topology{{Segments: map[string]string{params.TopologyKey: "n1"}}}},
			want: "hv-1\t1024\tmap[pool:default]\tmap[" + params.TopologyKey + ":n1]",
		},
		{
			name: "unreadable_record",
			vol:  &csi.Volume{VolumeId: "hv-2", VolumeContext: map[string]string{params.KeyRecordUnreadable: "record /s/hv-2.json cannot be read: record corrupt"}},
			want: "hv-2\t?\tUNREADABLE RECORD: record /s/hv-2.json cannot be read: record corrupt\t",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, listRow(tc.vol))
		})
	}
}
