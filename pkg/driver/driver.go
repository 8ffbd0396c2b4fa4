// Package driver is hostvol's CSI boundary: the gRPC server, the identity,
// controller and node services, request validation and the mapping of
// backend errors to gRPC codes. The storage itself lives in pkg/volume.
//
// Every handler follows the same order: validate the request, then call
// the volume layer (Controller or Node), which takes the volume's try-lock
// (ABORTED if another operation holds it), checks whether the work is
// already done, and does it.
package driver

import (
	"context"
	"errors"
	"net"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/untrusted"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// maxLoggedRequest bounds a request in the V(4) call log: a few times what
// any request hostvol accepts takes (paths, a volume context, capabilities).
const maxLoggedRequest = 4096

// DefaultVolumeSize is the capacity of a volume whose request names none.
const DefaultVolumeSize int64 = 1 << 30

// Config is what a Driver is built from.
type Config struct {
	Name       string // CSI driver name, e.g. hostvol.csi.io
	Version    string
	NodeID     string
	MaxVolumes int64 // NodeGetInfo max_volumes_per_node; 0: no limit
	Manager    *volume.Manager
	// Inline is what pod authors may ask of CSI inline volumes (the
	// Manager enforces the size bounds again, after rounding).
	Inline params.InlinePolicy

	// Interceptors wrap the driver's own interceptor, outermost first, so
	// they see every call with its final gRPC code: backend errors mapped,
	// UNAVAILABLE before Load, INTERNAL for a recovered panic (pkg/metrics).
	Interceptors []grpc.UnaryServerInterceptor
}

// Driver implements the CSI identity, controller and node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	cfg  Config
	vols *volume.Manager

	mu      sync.Mutex
	server  *grpc.Server
	stopped bool
}

// New returns a driver. It does not serve until Serve is called.
func New(cfg Config) (*Driver, error) {
	if cfg.Name == "" || cfg.NodeID == "" || cfg.Manager == nil {
		return nil, errors.New("driver name, node ID and volume manager are required")
	}
	return &Driver{cfg: cfg, vols: cfg.Manager}, nil
}

// Serve serves the three CSI services on l until Stop is called.
func (d *Driver) Serve(l net.Listener) error {
	chain := append(append([]grpc.UnaryServerInterceptor{}, d.cfg.Interceptors...), d.intercept)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(chain...))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		l.Close()
		return grpc.ErrServerStopped
	}
	d.server = srv
	d.mu.Unlock()
	klog.InfoS("Serving CSI", "driver", d.cfg.Name, "version", d.cfg.Version, "nodeID", d.cfg.NodeID, "address", l.Addr().String())
	return srv.Serve(l)
}

// Stop stops serving, letting calls in progress finish. A Serve that has
// not started yet returns at once (grpc.ErrServerStopped) when it does.
func (d *Driver) Stop() {
	d.mu.Lock()
	d.stopped = true
	srv := d.server
	d.mu.Unlock()
	if srv != nil {
		srv.GracefulStop()
	}
}

// intercept logs each call (secrets stripped), maps backend errors to gRPC
// codes, and logs each failure once with the method name.
func (d *Driver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		// A bug must cost one call, not the node's every mount.
		if r := recover(); r != nil {
			err = status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
			klog.ErrorS(err, "Call panicked", "method", info.FullMethod, "stack", string(debug.Stack()))
			resp = nil
		}
	}()
	// Bounded: a request may carry a 10 KB ID or a 4 MB map.
	klog.V(4).InfoS("Call", "method", info.FullMethod, "request", untrusted.Stringer{V: protosanitizer.StripSecrets(req), Max: maxLoggedRequest})
	if !d.vols.Ready() && !strings.HasPrefix(info.FullMethod, "/csi.v1.Identity/") {
		// Until the records are loaded and reconciled, nothing else may run.
		err := status.Error(codes.Unavailable, "hostvol is still loading its volume records")
		klog.ErrorS(err, "Call failed", "method", info.FullMethod, "code", codes.Unavailable.String())
		return nil, err
	}
	resp, err = handler(ctx, req)
	if err != nil {
		err = toStatus(err)
		klog.ErrorS(err, "Call failed", "method", info.FullMethod, "code", status.Code(err).String())
		return resp, err
	}
	klog.V(5).InfoS("Call succeeded", "method", info.FullMethod, "response", protosanitizer.StripSecrets(resp))
	return resp, nil
}
