// Command hostvol-load drives any CSI plugin through full volume lifecycles
// (CreateVolume, [NodeStageVolume], NodePublishVolume, NodeUnpublishVolume,
// [NodeUnstageVolume], DeleteVolume) and reports exact per-phase latency
// percentiles and throughput. See README.md for usage.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/seed3e7d50b2/hostvol/pkg/bytesize"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
)

// Exit codes.
const (
	exitOK     = 0 // every RPC of the run succeeded
	exitErrors = 1 // the run completed (or was interrupted) with errors
	exitSetup  = 2 // bad flags, or the plugin could not be probed
)

const (
	stageAuto   = "auto"
	stageAlways = "always"
	stageNever  = "never"

	accessMount = "mount"
	accessBlock = "block"
)

type config struct {
	endpoint     string // CSI endpoint, checked by endpoint.Parse
	n            int
	c            int
	e            int
	keepExisting bool
	targetDir    string
	size         int64
	params       map[string]string
	accessType   string
	fsType       string
	stage        string
	namePrefix   string
	json         bool
	timeout      time.Duration

	// --floor: no plugin; the same node work done with losetup, mkfs and
	// mount directly (floor.go).
	floor    bool
	poolDir  string // floor: directory of the image files
	directIO bool   // floor: losetup --direct-io=on

	// --snapshot: rounds of fill, snapshot, restore and a plain copy
	// (snapshot.go) instead of cycles.
	snapshot     bool
	fill         int64         // bytes written into each source volume
	copyDir      string        // where the plain copy goes: on the volumes' pool
	snapshotFrom string        // published, or staged (unpublished first)
	baseline     string        // image or tree: what the plain copy copies
	poll         time.Duration // between CreateSnapshot calls until ready
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit, so tests can drive the whole tool.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "hostvol-load: %v\n", err)
		return exitSetup
	}

	// The first SIGINT/SIGTERM stops starting new cycles; in-flight cycles and
	// the deletion of pre-existing volumes still complete. After that the
	// default handlers are restored, so a second signal kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// On return, done is closed and the watcher waited for before stop
	// cancels ctx, so a normal return is never reported as an interrupt and
	// nothing writes to stderr after run returns.
	done := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Go(func() {
		select {
		case <-ctx.Done():
			stop()
			fmt.Fprintln(stderr, "hostvol-load: interrupted: finishing in-flight cycles and cleaning up; interrupt again to abort")
		case <-done:
		}
	})
	defer watcher.Wait()
	defer close(done)

	if cfg.floor {
		return runFloorMain(ctx, cfg, stdout, stderr)
	}

	conn, err := endpoint.Dial(cfg.endpoint)
	if err != nil {
		fmt.Fprintf(stderr, "hostvol-load: %v\n", err)
		return exitSetup
	}
	defer conn.Close()
	cl := newClients(conn)

	info, err := probe(ctx, cl, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "hostvol-load: probe %s: %v\n", cfg.endpoint, err)
		return exitSetup
	}

	targetDir, removeTargetDir, err := prepareTargetDir(cfg.targetDir)
	if err != nil {
		fmt.Fprintf(stderr, "hostvol-load: %v\n", err)
		return exitSetup
	}
	printProbe(stdout, cfg, info, targetDir)

	r := newRunner(cfg, cl, info, targetDir, stderr)
	var res *result
	if cfg.snapshot {
		printSnapshotMode(stdout, cfg)
		r.stdout = stdout
		res = r.runSnapshot(ctx)
	} else {
		res = r.run(ctx)
	}
	removeTargetDir(stderr)

	return finish(res, stdout, stderr)
}

// runFloorMain is run for --floor.
func runFloorMain(ctx context.Context, cfg *config, stdout, stderr io.Writer) int {
	targetDir, removeTargetDir, err := prepareTargetDir(cfg.targetDir)
	if err != nil {
		fmt.Fprintf(stderr, "hostvol-load: %v\n", err)
		return exitSetup
	}
	if cfg.poolDir == "" {
		cfg.poolDir = targetDir
	}
	fsType, err := floorSetup(cfg)
	if err != nil {
		removeTargetDir(stderr)
		fmt.Fprintf(stderr, "hostvol-load: floor: %v\n", err)
		return exitSetup
	}
	printFloor(stdout, cfg, fsType, targetDir)
	info := &pluginInfo{name: "floor", version: fsType, useStage: true}
	r := newRunner(cfg, nil, info, targetDir, stderr)
	res := r.runFloor(ctx, fsType)
	removeTargetDir(stderr)
	return finish(res, stdout, stderr)
}

// finish prints the report and returns the exit code.
func finish(res *result, stdout, stderr io.Writer) int {
	printReport(stdout, res)
	if res.cfg.json {
		if err := printJSON(stdout, res); err != nil {
			fmt.Fprintf(stderr, "hostvol-load: json: %v\n", err)
			return exitErrors
		}
	}
	if res.interrupted {
		fmt.Fprintln(stderr, "hostvol-load: interrupted")
		return exitErrors
	}
	if res.totalErrors() > 0 {
		return exitErrors
	}
	return exitOK
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{params: map[string]string{}}
	fs, ep := newFlagSet(cfg, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := checkMode(cfg, set, *ep); err != nil {
		return nil, err
	}
	if err := checkSnapshotMode(cfg, set); err != nil {
		return nil, err
	}
	if err := checkValues(cfg); err != nil {
		return nil, err
	}
	if cfg.namePrefix == "" {
		b := make([]byte, 3)
		rand.Read(b)
		cfg.namePrefix = "load-" + hex.EncodeToString(b)
	}
	return cfg, nil
}

// newFlagSet defines the flags, which fill in cfg, and returns the flag set
// and the --endpoint value (checked by checkMode).
func newFlagSet(cfg *config, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("hostvol-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ep := fs.String("endpoint", "", "CSI endpoint: unix:///path/to.sock, a plain /path or tcp://host:port (required)")
	fs.IntVar(&cfg.n, "n", 1000, "number of measured volume cycles")
	fs.IntVar(&cfg.c, "c", 1, "number of concurrent workers")
	fs.IntVar(&cfg.e, "e", 0, "number of pre-existing volumes to create (untimed) before the measured run")
	fs.BoolVar(&cfg.keepExisting, "keep-existing", false, "do not delete the pre-existing volumes at the end")
	fs.StringVar(&cfg.targetDir, "target-dir", "", "directory for per-cycle staging/target paths (default: a new temp dir, removed at the end)")
	cfg.size = 1 << 20
	bytesize.Var(fs, &cfg.size, "size", "required_bytes per volume, a quantity such as 1Mi, 1Gi or 1G; 0 omits capacity_range")
	fs.Var((*paramsFlag)(&cfg.params), "param", "StorageClass parameter k=v passed to CreateVolume (repeatable)")
	fs.StringVar(&cfg.accessType, "access-type", accessMount, "volume access type: mount or block")
	fs.StringVar(&cfg.fsType, "fs-type", "", "fs_type of the mount capability")
	fs.StringVar(&cfg.stage, "stage", stageAuto, "call NodeStage/NodeUnstageVolume: auto (if the node advertises STAGE_UNSTAGE_VOLUME), always or never")
	fs.StringVar(&cfg.namePrefix, "name-prefix", "", `volume name prefix (default "load-<random>")`)
	fs.BoolVar(&cfg.json, "json", false, "also print the result as one JSON object")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "timeout per RPC attempt (--floor: per command)")
	fs.BoolVar(&cfg.floor, "floor", false, "no plugin: do a loop volume's node work directly (sparse image, mkfs as hostvol, losetup, mount, bind mount, and back) and report it as the floor")
	fs.StringVar(&cfg.poolDir, "pool-dir", "", "--floor: directory for the image files (default: --target-dir); put it on the disk of the driver's pool")
	fs.BoolVar(&cfg.directIO, "direct-io", false, "--floor: attach with losetup --direct-io=on (hostvol asks for direct I/O)")
	fs.BoolVar(&cfg.snapshot, "snapshot", false, "--n rounds, one at a time, of: create a volume, fill it, time a plain copy of its data (cp, then syncfs), CreateSnapshot until ready_to_use, CreateVolume from the snapshot; delete all")
	cfg.fill = 512 << 20
	bytesize.Var(fs, &cfg.fill, "fill", "--snapshot: bytes of incompressible data written into each source volume, a quantity such as 512Mi")
	fs.StringVar(&cfg.copyDir, "copy-dir", "", "--snapshot: directory for the plain copy (required); put it on the volumes' pool")
	fs.StringVar(&cfg.snapshotFrom, "snapshot-from", fromPublished, "--snapshot: the source's state when snapshotted: published, or staged (unpublished first)")
	fs.StringVar(&cfg.baseline, "baseline", baselineTree, "--snapshot: what the plain copy copies: tree (the files, cp -a) or image (the loop device's backing file, cp --sparse=always)")
	fs.DurationVar(&cfg.poll, "poll", 100*time.Millisecond, "--snapshot: interval between CreateSnapshot calls until ready_to_use")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: hostvol-load --endpoint unix:///path/csi.sock [flags]\n")
		fmt.Fprintf(fs.Output(), "       hostvol-load --floor --size 1Gi [--fs-type ext4] [--pool-dir DIR] [flags]\n")
		fmt.Fprintf(fs.Output(), "       hostvol-load --snapshot --endpoint unix:///path/csi.sock --size 1Gi --fill 512Mi --copy-dir DIR [flags]\n\n")
		fs.PrintDefaults()
	}
	return fs, ep
}

// checkMode checks that the flags set (by name) fit the mode: --floor, or
// a plugin at endpoint ep, which it stores in cfg.
func checkMode(cfg *config, set map[string]bool, ep string) error {
	if cfg.snapshot && cfg.floor {
		return fmt.Errorf("--snapshot and --floor do not go together")
	}
	if cfg.floor {
		for _, name := range []string{"endpoint", "e", "keep-existing", "param", "access-type", "stage"} {
			if set[name] {
				return fmt.Errorf("--%s does not apply to --floor", name)
			}
		}
		if !set["size"] {
			return fmt.Errorf("--floor needs --size (the image size, e.g. 1Gi)")
		}
		return nil
	}
	for _, name := range []string{"pool-dir", "direct-io"} {
		if set[name] {
			return fmt.Errorf("--%s applies only to --floor", name)
		}
	}
	if ep == "" {
		return fmt.Errorf("--endpoint is required")
	}
	if _, _, err := endpoint.Parse(ep); err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	cfg.endpoint = ep
	return nil
}

// checkValues checks the values of the flags that both modes share.
func checkValues(cfg *config) error {
	switch {
	case cfg.n < 0:
		return fmt.Errorf("--n must be >= 0")
	case cfg.c < 1:
		return fmt.Errorf("--c must be >= 1")
	case cfg.e < 0:
		return fmt.Errorf("--e must be >= 0")
	case cfg.timeout <= 0:
		return fmt.Errorf("--timeout must be > 0")
	}
	switch cfg.accessType {
	case accessMount:
	case accessBlock:
		if cfg.fsType != "" {
			return fmt.Errorf("--fs-type only applies to --access-type=mount")
		}
	default:
		return fmt.Errorf("--access-type must be mount or block, got %q", cfg.accessType)
	}
	switch cfg.stage {
	case stageAuto, stageAlways, stageNever:
	default:
		return fmt.Errorf("--stage must be auto, always or never, got %q", cfg.stage)
	}
	return nil
}

// prepareTargetDir returns the absolute directory under which per-cycle
// paths are made, and a function to clean it up. A user-supplied directory
// is created if missing and kept; a default temp dir is removed. Removal is
// never recursive, so a mount left behind by a failed unpublish is not
// descended into.
func prepareTargetDir(dir string) (string, func(io.Writer), error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "hostvol-load-")
		if err != nil {
			return "", nil, err
		}
		return d, func(w io.Writer) {
			if err := os.Remove(d); err != nil {
				fmt.Fprintf(w, "hostvol-load: warning: temp target dir not removed: %v\n", err)
			}
		}, nil
	}
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(d, 0o750); err != nil {
		return "", nil, err
	}
	return d, func(io.Writer) {}, nil
}

// paramsFlag collects repeated --param k=v.
type paramsFlag map[string]string

func (p *paramsFlag) String() string {
	if p == nil {
		return ""
	}
	return formatMap(*p)
}

func (p *paramsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want k=v, got %q", s)
	}
	(*p)[k] = v
	return nil
}

// formatMap renders a map as sorted k=v pairs joined by commas.
func formatMap(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}
