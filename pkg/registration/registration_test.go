package registration_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/registration"
)

// The kubelet's side of the exchange: GetInfo, then NotifyRegistrationStatus;
// the socket disappears when the server stops.
func TestRegistration(t *testing.T) {
	dir := t.TempDir()
	sock := registration.SocketPath(dir, "hostvol.csi.io")
	require.Equal(t, filepath.Join(dir, "hostvol.csi.io-reg.sock"), sock)
	require.NoError(t, os.WriteFile(sock, nil, 0o600), "a stale socket file is replaced")

	failed := make(chan error, 1)
	ctx := context.Background()
	srv := &registration.Server{DriverName: "hostvol.csi.io", Endpoint: "/var/lib/kubelet/plugins/hostvol.csi.io/csi.sock", Failed: failed}
	stop, err := registration.Serve(srv, sock, nil)
	require.NoError(t, err)
	t.Cleanup(stop)

	conn, err := endpoint.Dial(sock)
	require.NoError(t, err)
	defer conn.Close()
	c := registerapi.NewRegistrationClient(conn)
	info, err := c.GetInfo(ctx, &registerapi.InfoRequest{})
	require.NoError(t, err)
	require.Equal(t, registerapi.CSIPlugin, info.Type)
	require.Equal(t, "hostvol.csi.io", info.Name)
	require.Equal(t, "/var/lib/kubelet/plugins/hostvol.csi.io/csi.sock", info.Endpoint)
	require.Equal(t, []string{"1.0.0"}, info.SupportedVersions)

	_, err = c.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true})
	require.NoError(t, err)
	require.Empty(t, failed)
	_, err = c.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: false, Error: "version mismatch"})
	require.NoError(t, err)
	select {
	case err := <-failed:
		require.ErrorContains(t, err, "version mismatch")
	case <-time.After(5 * time.Second):
		t.Fatal("refusal not reported")
	}

	stop()
	_, err = os.Stat(sock)
	require.True(t, os.IsNotExist(err), "stopping removes the socket (deregisters): %v", err)
}
