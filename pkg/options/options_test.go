package options

import (
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

func parse(t *testing.T, args ...string) (Options, error) {
	t.Helper()
	o := Defaults()
	fs := flag.NewFlagSet("hostvol", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	return o, o.Validate()
}

func TestFlagsAndValidate(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{name: "minimal", args: []string{"--node-id=n1", "--pool=default=/srv/pool"}},
		{name: "full", args: []string{"--endpoint=unix:///csi/csi.sock", "--node-id=n1", "--driver-name=hostvol.csi.io",
			"--state-dir=/var/lib/hostvol/state", "--pool=default=/srv/a", "--pool=nfs=/mnt/nfs,shared", "--max-volumes=100"}},
		{name: "no_pool", args: []string{"--node-id=n1"}, wantErr: true},
		{name: "bad_pool", args: []string{"--node-id=n1", "--pool=default"}, wantErr: true},
		{name: "relative_pool", args: []string{"--node-id=n1", "--pool=default=pool"}, wantErr: true},
		{name: "duplicate_pool_name", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--pool=a=/srv/b"}, wantErr: true},
		{name: "nested_pools", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--pool=b=/srv/a/b"}, wantErr: true},
		{name: "pool_in_state_dir", args: []string{"--node-id=n1", "--state-dir=/srv", "--pool=a=/srv/a"}, wantErr: true},
		{name: "bad_endpoint", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--endpoint=csi.sock"}, wantErr: true},
		{name: "relative_socket", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--endpoint=unix://csi.sock"}, wantErr: true},
		{name: "empty_node", args: []string{"--node-id=", "--pool=a=/srv/a"}, wantErr: true},
		{name: "bad_driver_name", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--driver-name=-bad"}, wantErr: true},
		{name: "relative_state_dir", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--state-dir=state"}, wantErr: true},
		{name: "negative_max_volumes", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--max-volumes=-1"}, wantErr: true},
		{name: "max_volumes_not_number", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--max-volumes=ten"}, wantErr: true},
		{name: "registration", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--registration-dir=/registration",
			"--kubelet-registration-path=/var/lib/kubelet/plugins/hostvol.csi.io/csi.sock"}},
		{name: "registration_without_socket_path", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--registration-dir=/registration"}, wantErr: true},
		{name: "registration_relative_dir", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--registration-dir=registration",
			"--kubelet-registration-path=/var/lib/kubelet/plugins/hostvol.csi.io/csi.sock"}, wantErr: true},
		{name: "socket_path_without_registration", args: []string{"--node-id=n1", "--pool=a=/srv/a",
			"--kubelet-registration-path=/var/lib/kubelet/plugins/hostvol.csi.io/csi.sock"}, wantErr: true},
		{name: "http_endpoint_port_only", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=:9808"}},
		{name: "http_endpoint_ipv4", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=127.0.0.1:9808"}},
		{name: "http_endpoint_ipv6", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=[::1]:9808"}},
		{name: "http_endpoint_host_name", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=localhost:9808"}},
		{name: "http_endpoint_no_port", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=9808"}, wantErr: true},
		{name: "http_endpoint_url", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=http://:9808"}, wantErr: true},
		{name: "http_endpoint_ipv6_unbracketed", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=::1:9808"}, wantErr: true},
		{name: "http_endpoint_named_port", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=:http"}, wantErr: true},
		{name: "http_endpoint_port_zero", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=:0"}, wantErr: true},
		{name: "http_endpoint_port_too_big", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=:65536"}, wantErr: true},
		{name: "http_endpoint_empty_port", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=127.0.0.1:"}, wantErr: true},
		{name: "http_endpoint_bad_host", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=bad/host:9808"}, wantErr: true},
		{name: "inline_bounds", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--inline-max-size=1Gi", "--inline-max-total=10Gi", "--inline-attributes=size,type"}},
		{name: "inline_off", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--inline-pools="}},
		{name: "inline_unknown_pool", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--inline-pools=fast"}, wantErr: true},
		{name: "inline_shared_pool", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--pool=nfs=/mnt/nfs,shared", "--inline-pools=nfs"}, wantErr: true},
		{name: "inline_size_limit_attribute", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--inline-attributes=size,sizeLimit"}, wantErr: true},
		{name: "inline_max_size_zero", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--inline-max-size=0"}, wantErr: true},
		{name: "inline_max_size_garbage", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--inline-max-size=lots"}, wantErr: true},
		{name: "inline_total_below_size", args: []string{"--node-id=n1", "--pool=default=/srv/a", "--inline-max-size=4Gi", "--inline-max-total=1Gi"}, wantErr: true},
		// The manifests pass --http-endpoint=[$(POD_IP)]:9808; the kubelet
		// expands it to the pod's IPv4 or IPv6 address, brackets kept.
		{name: "http_endpoint_pod_ipv4_bracketed", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=[10.244.1.5]:9808"}},
		{name: "http_endpoint_pod_ipv6_bracketed", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=[fd00:10:244::5]:9808"}},
		{name: "http_endpoint_pod_ip_not_expanded", args: []string{"--node-id=n1", "--pool=a=/srv/a", "--http-endpoint=[$(POD_IP)]:9808"}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.args...)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestPoolsParsed(t *testing.T) {
	o, err := parse(t, "--node-id=n1", "--pool=default=/srv/a", "--pool=nfs=/mnt/nfs,shared")
	require.NoError(t, err)
	require.Equal(t, []pool.Spec{{Name: "default", Path: "/srv/a"}, {Name: "nfs", Path: "/mnt/nfs", Shared: true}}, o.Pools)
}

func TestHTTPEndpointOffByDefault(t *testing.T) {
	o, err := parse(t, "--node-id=n1", "--pool=a=/srv/a")
	require.NoError(t, err)
	require.Empty(t, o.HTTPEndpoint)
}

func TestNodeIDFromEnv(t *testing.T) {
	t.Setenv("NODE_NAME", "from-env")
	require.Equal(t, "from-env", Defaults().NodeID)
}

func TestInlinePolicy(t *testing.T) {
	o, err := parse(t, "--node-id=n1", "--pool=default=/srv/a", "--pool=fast=/srv/b")
	require.NoError(t, err)
	pol := o.Inline()
	require.Equal(t, []string{"default"}, pol.Pools, "by default the pool named default")
	require.Equal(t, int64(4<<30), pol.MaxBytes)
	require.Equal(t, int64(16<<30), pol.MaxTotalBytes)

	o, err = parse(t, "--node-id=n1", "--pool=default=/srv/a,shared")
	require.NoError(t, err)
	require.Empty(t, o.Inline().Pools, "a shared default pool holds no inline volumes")

	o, err = parse(t, "--node-id=n1", "--pool=default=/srv/a", "--pool=fast=/srv/b", "--inline-pools=fast", "--inline-max-size=512Mi")
	require.NoError(t, err)
	require.Equal(t, []string{"fast"}, o.Inline().Pools)
	require.Equal(t, int64(512<<20), o.Inline().MaxBytes)

	o, err = parse(t, "--node-id=n1", "--pool=default=/srv/a", "--inline-pools=")
	require.NoError(t, err)
	require.Empty(t, o.Inline().Pools, "an empty list turns inline volumes off")
}
