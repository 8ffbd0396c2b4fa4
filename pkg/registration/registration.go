// Package registration serves the kubelet's plugin-registration API
// (k8s.io/kubelet/pkg/apis/pluginregistration/v1) from hostvol itself, the
// job node-driver-registrar does as a sidecar: a socket in the kubelet's
// plugins_registry directory that tells the kubelet the driver's name and
// where its CSI socket is. The kubelet's plugin watcher finds the socket,
// calls GetInfo, then NotifyRegistrationStatus; removing the socket
// deregisters the driver.
package registration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
)

// SupportedVersions are the CSI versions hostvol speaks, as the kubelet
// expects them.
var SupportedVersions = []string{"1.0.0"}

// Server answers the kubelet's registration calls.
type Server struct {
	registerapi.UnimplementedRegistrationServer

	// DriverName is the CSI driver name.
	DriverName string
	// Endpoint is the CSI socket path as the kubelet sees it on the host
	// (for example /var/lib/kubelet/plugins/hostvol.csi.io/csi.sock).
	Endpoint string
	// Failed receives the kubelet's error when it refuses the
	// registration; nil to only log it.
	Failed chan<- error
}

// GetInfo tells the kubelet who we are and where the CSI socket is.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	klog.V(2).InfoS("Kubelet asked for plugin info", "driver", s.DriverName, "endpoint", s.Endpoint)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.DriverName,
		Endpoint:          s.Endpoint,
		SupportedVersions: SupportedVersions,
	}, nil
}

// NotifyRegistrationStatus receives the kubelet's verdict.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.PluginRegistered {
		klog.InfoS("Registered with the kubelet", "driver", s.DriverName)
		return &registerapi.RegistrationStatusResponse{}, nil
	}
	err := fmt.Errorf("kubelet refused the registration of %s: %s", s.DriverName, st.Error)
	klog.ErrorS(err, "Plugin registration failed")
	if s.Failed != nil {
		select {
		case s.Failed <- err:
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// SocketPath is where the registration socket of a driver goes in the
// kubelet's plugins_registry directory.
func SocketPath(dir, driverName string) string {
	return filepath.Join(dir, driverName+"-reg.sock")
}

// Serve listens on socketPath (replacing a stale socket) and serves s. It
// returns once the server is listening, with stop, which stops serving and
// removes the socket (the kubelet then deregisters the driver) before it
// returns. Serve errors go to errc.
func Serve(s *Server, socketPath string, errc chan<- error) (stop func(), err error) {
	l, err := endpoint.Listen(socketPath)
	if err != nil {
		return nil, fmt.Errorf("listen on registration socket: %w", err)
	}
	g := grpc.NewServer()
	registerapi.RegisterRegistrationServer(g, s)
	go func() {
		if err := g.Serve(l); err != nil && errc != nil {
			errc <- fmt.Errorf("registration server: %w", err)
		}
	}()
	klog.InfoS("Serving kubelet plugin registration", "socket", socketPath, "endpoint", s.Endpoint)
	var once sync.Once
	return func() {
		once.Do(func() {
			g.Stop()
			_ = os.Remove(socketPath)
		})
	}, nil
}
