// Package options holds every setting of the hostvol binary in one struct,
// with its flags and its validation.
package options

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/seed3e7d50b2/hostvol/pkg/bytesize"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
	"github.com/seed3e7d50b2/hostvol/pkg/pool"
)

// DefaultDriverName is the CSI driver name users put in a StorageClass.
const DefaultDriverName = "hostvol.csi.io"

// Options are the settings of a hostvol node plugin.
type Options struct {
	// Endpoint is the CSI socket, unix:///csi/csi.sock (or tcp://host:port
	// for development).
	Endpoint string
	// NodeID names this node in topology and records. Default: $NODE_NAME,
	// else the host name.
	NodeID string
	// DriverName is the CSI driver name (GetPluginInfo).
	DriverName string
	// StateDir holds the records of node-local volumes and what this node
	// has staged and published.
	StateDir string
	// Pools are the storage pools, from repeated --pool NAME=PATH[,shared].
	Pools []pool.Spec
	// MaxVolumes is reported as max_volumes_per_node; 0 means no limit.
	MaxVolumes int64
	// RegistrationDir is the kubelet's plugins_registry directory as
	// mounted in this container; when set, hostvol registers itself with
	// the kubelet there (no node-driver-registrar sidecar needed).
	RegistrationDir string
	// KubeletRegistrationPath is the CSI socket's path as the kubelet sees
	// it on the host, told to the kubelet at registration.
	KubeletRegistrationPath string
	// HTTPEndpoint is the HOST:PORT (or :PORT) of the HTTP server for
	// Prometheus metrics (/metrics) and health (/healthz); empty: off.
	HTTPEndpoint string

	// InlinePools are the pools CSI inline volumes may live in (nil: the
	// pool "default" if it is configured and node-local; empty: inline
	// volumes are turned off). Pod authors choose inline attributes, so
	// these four options are the admin's bound on them.
	InlinePools []string
	// InlineAttributes are the attributes pods may set on inline volumes
	// (a subset of params.InlineAttributes).
	InlineAttributes []string
	// InlineMaxBytes bounds one inline volume, InlineMaxTotalBytes all of
	// this node's inline volumes together.
	InlineMaxBytes, InlineMaxTotalBytes int64
}

// Defaults returns Options with every default filled in.
func Defaults() Options {
	return Options{
		Endpoint:   "unix:///csi/csi.sock",
		NodeID:     defaultNodeID(),
		DriverName: DefaultDriverName,
		StateDir:   "/var/lib/hostvol/state",

		InlineAttributes:    append([]string(nil), params.InlineAttributes...),
		InlineMaxBytes:      params.DefaultInlineMaxBytes,
		InlineMaxTotalBytes: params.DefaultInlineMaxTotalBytes,
	}
}

func defaultNodeID() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// poolFlag collects repeated --pool values.
type poolFlag struct{ pools *[]pool.Spec }

func (f poolFlag) String() string {
	if f.pools == nil {
		return ""
	}
	s := make([]string, 0, len(*f.pools))
	for _, p := range *f.pools {
		s = append(s, p.String())
	}
	return strings.Join(s, " ")
}

func (f poolFlag) Set(v string) error {
	sp, err := pool.ParseSpec(v)
	if err != nil {
		return err
	}
	*f.pools = append(*f.pools, sp)
	return nil
}

// AddFlags registers the options' flags on fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "CSI endpoint: unix:///path/to/csi.sock (or tcp://host:port)")
	fs.StringVar(&o.NodeID, "node-id", o.NodeID, "node ID (default: $NODE_NAME, else the host name)")
	fs.StringVar(&o.DriverName, "driver-name", o.DriverName, "CSI driver name")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "directory for volume records and node state")
	fs.Var(poolFlag{&o.Pools}, "pool", "storage pool NAME=PATH or NAME=PATH,shared (repeatable; a pool named \"default\" serves classes that name none)")
	fs.Int64Var(&o.MaxVolumes, "max-volumes", o.MaxVolumes, "maximum number of volumes on this node reported to Kubernetes (0: no limit)")
	fs.StringVar(&o.RegistrationDir, "registration-dir", o.RegistrationDir, "kubelet plugins_registry directory (as mounted here) to register with the kubelet; empty: do not register (use node-driver-registrar)")
	fs.StringVar(&o.KubeletRegistrationPath, "kubelet-registration-path", o.KubeletRegistrationPath, "the CSI socket path as the kubelet sees it on the host, e.g. /var/lib/kubelet/plugins/hostvol.csi.io/csi.sock (required with --registration-dir)")
	fs.StringVar(&o.HTTPEndpoint, "http-endpoint", o.HTTPEndpoint, "HOST:PORT or :PORT for Prometheus metrics (/metrics) and health (/healthz), e.g. :9808; empty: off")
	fs.Func("inline-pools", "comma-separated node-local pools CSI inline volumes may use; empty turns inline volumes off (default: \"default\" if configured and not shared)", func(v string) error {
		o.InlinePools = splitList(v)
		return nil
	})
	fs.Func("inline-attributes", "comma-separated volumeAttributes pods may set on inline volumes (default and maximum: "+strings.Join(params.InlineAttributes, ",")+")", func(v string) error {
		o.InlineAttributes = splitList(v)
		return nil
	})
	bytesize.Var(fs, &o.InlineMaxBytes, "inline-max-size", "largest inline volume, a quantity such as 4Gi")
	bytesize.Var(fs, &o.InlineMaxTotalBytes, "inline-max-total", "most bytes all inline volumes of this node may hold together, a quantity such as 16Gi")
}

// splitList splits a comma-separated list, dropping empty items; "" is an
// empty, non-nil list.
func splitList(v string) []string {
	out := []string{}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Inline returns the inline volume policy the options give.
func (o *Options) Inline() params.InlinePolicy {
	pools := o.InlinePools
	if pools == nil {
		pools = []string{}
		for _, p := range o.Pools {
			if p.Name == pool.DefaultName && !p.Shared {
				pools = append(pools, p.Name)
			}
		}
	}
	return params.InlinePolicy{
		Pools:         pools,
		Attributes:    o.InlineAttributes,
		MaxBytes:      o.InlineMaxBytes,
		MaxTotalBytes: o.InlineMaxTotalBytes,
	}
}

var driverNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?$`)

// maxNodeIDLen is the CSI spec's bound on node_id.
const maxNodeIDLen = 192

// Validate checks every option and returns all problems at once.
func (o *Options) Validate() error {
	var errs []error
	if _, _, err := endpoint.Parse(o.Endpoint); err != nil {
		errs = append(errs, fmt.Errorf("--endpoint: %w", err))
	}
	if o.NodeID == "" {
		errs = append(errs, errors.New("--node-id: empty, and neither $NODE_NAME nor the host name is set"))
	} else if len(o.NodeID) > maxNodeIDLen || strings.ContainsAny(o.NodeID, "\x00\n") {
		errs = append(errs, fmt.Errorf("--node-id %q: at most %d bytes, no NUL or newline", o.NodeID, maxNodeIDLen))
	}
	if !driverNameRE.MatchString(o.DriverName) {
		errs = append(errs, fmt.Errorf("--driver-name %q: want a domain-like name of at most 63 characters", o.DriverName))
	}
	if o.StateDir == "" || !filepath.IsAbs(o.StateDir) || filepath.Clean(o.StateDir) != o.StateDir {
		errs = append(errs, fmt.Errorf("--state-dir %q: must be an absolute, clean path", o.StateDir))
	}
	if o.MaxVolumes < 0 {
		errs = append(errs, fmt.Errorf("--max-volumes %d: must not be negative", o.MaxVolumes))
	}
	if o.RegistrationDir != "" {
		if !filepath.IsAbs(o.RegistrationDir) {
			errs = append(errs, fmt.Errorf("--registration-dir %q: must be an absolute path", o.RegistrationDir))
		}
		if o.KubeletRegistrationPath == "" || !filepath.IsAbs(o.KubeletRegistrationPath) {
			errs = append(errs, fmt.Errorf("--kubelet-registration-path %q: an absolute socket path is required with --registration-dir", o.KubeletRegistrationPath))
		}
	} else if o.KubeletRegistrationPath != "" {
		errs = append(errs, errors.New("--kubelet-registration-path is only used with --registration-dir"))
	}
	if o.HTTPEndpoint != "" {
		if err := validateHTTPEndpoint(o.HTTPEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("--http-endpoint %q: %w", o.HTTPEndpoint, err))
		}
	}
	errs = append(errs, o.validatePools()...)
	errs = append(errs, o.validateInline()...)
	return errors.Join(errs...)
}

// validatePools checks the pools: at least one, each valid, names unique,
// no path inside another pool's or the state directory.
func (o *Options) validatePools() []error {
	var errs []error
	if len(o.Pools) == 0 {
		errs = append(errs, errors.New("--pool: at least one pool is required, e.g. --pool default=/var/lib/hostvol/pool"))
	}
	names := map[string]bool{}
	for i, p := range o.Pools {
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--pool: %w", err))
			continue
		}
		if names[p.Name] {
			errs = append(errs, fmt.Errorf("--pool: pool %q is given twice", p.Name))
		}
		names[p.Name] = true
		if o.StateDir != "" && nested(p.Path, o.StateDir) {
			errs = append(errs, fmt.Errorf("--pool %q: path %s and --state-dir %s must not contain each other", p.Name, p.Path, o.StateDir))
		}
		for _, q := range o.Pools[:i] {
			if q.Name != p.Name && nested(p.Path, q.Path) {
				errs = append(errs, fmt.Errorf("--pool: paths of pools %q and %q must not contain each other", q.Name, p.Name))
			}
		}
	}
	return errs
}

// validateInline checks the inline volume policy: its pools exist and are
// node-local, its attributes are inline attributes, its bounds positive.
func (o *Options) validateInline() []error {
	var errs []error
	shared := map[string]bool{}
	for _, p := range o.Pools {
		shared[p.Name] = p.Shared
	}
	for _, name := range o.InlinePools {
		switch sh, ok := shared[name]; {
		case !ok:
			errs = append(errs, fmt.Errorf("--inline-pools: pool %q is not configured (--pool)", name))
		case sh:
			errs = append(errs, fmt.Errorf("--inline-pools: pool %q is shared; inline volumes live in node-local pools only", name))
		}
	}
	for _, a := range o.InlineAttributes {
		if !slices.Contains(params.InlineAttributes, a) {
			errs = append(errs, fmt.Errorf("--inline-attributes: %q is not an attribute pods may be allowed to set (possible: %s; sizeLimit is never one: inline volumes are always hard-sized)", a, strings.Join(params.InlineAttributes, ", ")))
		}
	}
	if o.InlineMaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("--inline-max-size %d: must be positive (turn inline volumes off with --inline-pools=)", o.InlineMaxBytes))
	}
	if o.InlineMaxTotalBytes < o.InlineMaxBytes {
		errs = append(errs, fmt.Errorf("--inline-max-total %d: must be at least --inline-max-size %d", o.InlineMaxTotalBytes, o.InlineMaxBytes))
	}
	return errs
}

// nested reports whether a and b are the same path or one contains the other.
func nested(a, b string) bool {
	within := func(x, y string) bool { return x == y || strings.HasPrefix(x, y+"/") }
	return within(a, b) || within(b, a)
}

var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9.]{0,251}[a-zA-Z0-9])?$`)

// validateHTTPEndpoint accepts HOST:PORT and :PORT with a numeric port and
// an IP address, a host name or nothing (every interface) as host.
func validateHTTPEndpoint(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT or :PORT, e.g. :9808 (%w)", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return fmt.Errorf("host %q: want an IP address or a host name", host)
	}
	return nil
}
