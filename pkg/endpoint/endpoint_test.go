package endpoint_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name        string
		in          string
		wantNetwork string
		wantAddr    string
		wantErr     bool
	}{
		{name: "unix_url", in: "unix:///run/csi/csi.sock", wantNetwork: "unix", wantAddr: "/run/csi/csi.sock"},
		{name: "unix_short", in: "unix:/run/csi/csi.sock", wantNetwork: "unix", wantAddr: "/run/csi/csi.sock"},
		{name: "plain_path", in: "/run/csi/csi.sock", wantNetwork: "unix", wantAddr: "/run/csi/csi.sock"},
		{name: "tcp", in: "tcp://127.0.0.1:10000", wantNetwork: "tcp", wantAddr: "127.0.0.1:10000"},
		{name: "relative_socket", in: "unix://csi.sock", wantErr: true},
		{name: "relative_short", in: "unix:csi.sock", wantErr: true},
		{name: "empty_unix", in: "unix://", wantErr: true},
		{name: "empty_tcp", in: "tcp://", wantErr: true},
		{name: "unknown_scheme", in: "http://localhost", wantErr: true},
		{name: "relative_path", in: "csi.sock", wantErr: true},
		{name: "scheme_case", in: "UNIX:///run/csi.sock", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			network, addr, err := endpoint.Parse(tc.in)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantNetwork, network)
			require.Equal(t, tc.wantAddr, addr)
		})
	}
}

// serveHealth serves the gRPC health service on l until the test ends.
func serveHealth(t *testing.T, l net.Listener) {
	t.Helper()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

// check makes one call over a connection dialed to ep.
func check(t *testing.T, ep string) error {
	t.Helper()
	conn, err := endpoint.Dial(ep)
	require.NoError(t, err)
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	return err
}

func TestListenAndDial(t *testing.T) {
	t.Run("unix_replaces_stale_socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "csi.sock")
		stale, err := net.Listen("unix", sock)
		require.NoError(t, err)
		// Closing a unix listener removes its file: put one back, as a
		// killed process would leave it.
		require.NoError(t, stale.Close())
		require.NoError(t, os.WriteFile(sock, nil, 0o600))

		l, err := endpoint.Listen("unix://" + sock)
		require.NoError(t, err)
		serveHealth(t, l)
		require.NoError(t, check(t, "unix://"+sock))
		require.NoError(t, check(t, "unix:"+sock))
		require.NoError(t, check(t, sock))
	})
	t.Run("tcp", func(t *testing.T) {
		l, err := endpoint.Listen("tcp://127.0.0.1:0")
		require.NoError(t, err)
		serveHealth(t, l)
		require.NoError(t, check(t, "tcp://"+l.Addr().String()))
	})
	t.Run("nothing_listening", func(t *testing.T) {
		err := check(t, "unix://"+filepath.Join(t.TempDir(), "none.sock"))
		require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	})
	t.Run("path_is_a_directory", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "keep"), nil, 0o600))
		_, err := endpoint.Listen("unix://" + dir)
		require.Error(t, err)
		require.FileExists(t, filepath.Join(dir, "keep"))
	})
	t.Run("bad_endpoint", func(t *testing.T) {
		_, err := endpoint.Listen("csi.sock")
		require.Error(t, err)
		_, err = endpoint.Dial("csi.sock")
		require.Error(t, err)
	})
}
