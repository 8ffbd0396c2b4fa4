// Command hostvol is the hostvol CSI driver: identity, controller and node
// services on one socket. "hostvol client ..." talks to a running driver.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/seed3e7d50b2/hostvol/pkg/driver"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/fsutil"
	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/metrics"
	"github.com/seed3e7d50b2/hostvol/pkg/mounter"
	"github.com/seed3e7d50b2/hostvol/pkg/options"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
	"github.com/seed3e7d50b2/hostvol/pkg/quota"
	"github.com/seed3e7d50b2/hostvol/pkg/registration"
	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "client":
			os.Exit(runClient(os.Args[2:]))
		case "version", "--version", "-version":
			fmt.Println(version)
			return
		}
	}
	if err := serve(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "hostvol: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
}

func serve(args []string) error {
	opts, err := parseServeFlags(args)
	if err != nil || opts == nil {
		return err
	}
	defer klog.Flush()
	pools, err := openPools(opts.Pools)
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	if err != nil {
		return err
	}
	mgr, err := newManager(opts, pools)
	if err != nil {
		return err
	}
	drv, met, err := newDriver(opts, mgr)
	if err != nil {
		return err
	}
	return run(opts, mgr, drv, met)
}

// parseServeFlags parses and validates the driver's flags; nil options
// and no error mean --help was answered.
func parseServeFlags(args []string) (*options.Options, error) {
	fs := flag.NewFlagSet("hostvol", flag.ContinueOnError)
	klog.InitFlags(fs)
	opts := options.Defaults()
	opts.AddFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: hostvol [flags]            serve the CSI driver\n       hostvol client [flags] CMD  talk to a running driver (hostvol client -h)\n       hostvol version\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("invalid options:\n%w", err)
	}
	return &opts, nil
}

// openPools opens every configured pool; it returns those it opened even
// on error, for the caller to close.
func openPools(specs []pool.Spec) ([]*pool.Pool, error) {
	pools := make([]*pool.Pool, 0, len(specs))
	for _, sp := range specs {
		p, err := pool.Open(sp)
		if err != nil {
			return pools, err
		}
		pools = append(pools, p)
		klog.InfoS("Pool opened", "pool", sp.Name, "path", sp.Path, "shared", sp.Shared)
	}
	return pools, nil
}

// newManager builds the volume layer on the real OS adapters.
func newManager(opts *options.Options, pools []*pool.Pool) (*volume.Manager, error) {
	return volume.New(volume.Config{
		NodeID:   opts.NodeID,
		StateDir: opts.StateDir,
		Pools:    pools,
		// Bind mounts and unmounts by syscall; filesystems through mount(8).
		Mounter: mounter.New(mount.New("")),
		Loop:    loop.New(),
		FS:      fsutil.New(utilexec.New()),
		// Project quotas and btrfs qgroups, detected per pool.
		Quota: quota.New(),
		// Inline volumes: the admin's bounds on what pod authors ask.
		InlineMaxBytes:      inlineMax(opts.Inline(), opts.InlineMaxBytes),
		InlineMaxTotalBytes: opts.InlineMaxTotalBytes,
	})
}

// newDriver builds the CSI driver and, with --http-endpoint, the metrics:
// an interceptor outside the driver's own counts and times every call with
// its final gRPC code.
func newDriver(opts *options.Options, mgr *volume.Manager) (*driver.Driver, *metrics.Metrics, error) {
	var met *metrics.Metrics
	var interceptors []grpc.UnaryServerInterceptor
	if opts.HTTPEndpoint != "" {
		var err error
		if met, err = metrics.New(metrics.Config{Version: version}); err != nil {
			return nil, nil, err
		}
		if err := met.RegisterStorage(mgr.Controller); err != nil {
			return nil, nil, err
		}
		interceptors = append(interceptors, met.UnaryServerInterceptor())
	}
	drv, err := driver.New(driver.Config{
		Name:       opts.DriverName,
		Version:    version,
		NodeID:     opts.NodeID,
		MaxVolumes: opts.MaxVolumes,
		Manager:    mgr,
		Inline:     opts.Inline(),

		Interceptors: interceptors,
	})
	return drv, met, err
}

// run serves until a signal or a fatal error: the metrics endpoint, the
// CSI endpoint, the start-up load of the records, and the kubelet's
// registration socket.
func run(opts *options.Options, mgr *volume.Manager, drv *driver.Driver, met *metrics.Metrics) error {
	// Listen before serving CSI: an address that is taken stops start-up.
	var httpSrv *metrics.Server
	if met != nil {
		var err error
		if httpSrv, err = metrics.Listen(opts.HTTPEndpoint, met.Handler(drv)); err != nil {
			return fmt.Errorf("--http-endpoint: %w", err)
		}
		// Deferred calls run last first: this one after the gRPC server
		// stopped, so /healthz and /metrics answer while calls drain.
		defer stopHTTP(httpSrv)
	}
	l, err := endpoint.Listen(opts.Endpoint)
	if err != nil {
		return err
	}

	errc := make(chan error, 4)
	go func() { errc <- drv.Serve(l) }()
	if httpSrv != nil {
		go func() { errc <- httpSrv.Serve() }()
	}
	// Serve first, load second: Probe answers "not ready" and other calls
	// UNAVAILABLE until every record is loaded and reconciled.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		if err := mgr.Load(); err != nil {
			errc <- fmt.Errorf("load volume records: %w", err)
			return
		}
		// Images fill up as pods write: re-read what they occupy so that
		// GetCapacity's promised space follows.
		mgr.Controller.RefreshEvery(30*time.Second, stop)
	}()
	if opts.RegistrationDir != "" {
		stopReg, err := register(opts, errc)
		if err != nil {
			drv.Stop()
			return err
		}
		defer stopReg() // removes the socket: the kubelet deregisters the driver
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-sigc:
		klog.InfoS("Stopping on signal", "signal", sig.String())
		drv.Stop()
		return nil
	case err := <-errc:
		drv.Stop()
		return err
	}
}

// register serves the kubelet's plugin-registration socket. Like
// node-driver-registrar, a refused registration ends the process (on
// errc), so the pod restarts and registers afresh.
func register(opts *options.Options, errc chan error) (stop func(), err error) {
	regFailed := make(chan error, 1)
	reg := &registration.Server{DriverName: opts.DriverName, Endpoint: opts.KubeletRegistrationPath, Failed: regFailed}
	stop, err = registration.Serve(reg, registration.SocketPath(opts.RegistrationDir, opts.DriverName), errc)
	if err != nil {
		return nil, err
	}
	go func() { errc <- <-regFailed }()
	return stop, nil
}

// inlineMax is the largest inline volume the Manager may make: none when
// the policy allows no pool.
func inlineMax(pol params.InlinePolicy, maxBytes int64) int64 {
	if len(pol.Pools) == 0 {
		return 0
	}
	return maxBytes
}

// stopHTTP stops the --http-endpoint server, giving answers in progress a
// few seconds.
func stopHTTP(s *metrics.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		klog.ErrorS(err, "HTTP endpoint did not stop cleanly")
	}
}
