package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakePlugin is an in-memory CSI plugin that checks the requests the load
// tool sends and tracks state, so tests can assert that every run cleans up.
type fakePlugin struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	// Configuration, set before serving.
	stage            bool              // advertise STAGE_UNSTAGE_VOLUME
	noCreateDelete   bool              // omit CREATE_DELETE_VOLUME
	topology         map[string]string // NodeGetInfo accessible_topology
	wantSize         int64
	wantBlock        bool
	wantParams       map[string]string
	abortCreates     int  // fail the first N CreateVolume calls with Aborted
	failPublishEvery int  // fail every k-th NodePublishVolume with Internal
	leaveTarget      bool // do not remove the target on unpublish (spec violation)

	mu        sync.Mutex
	vols      map[string]string // id -> name
	staged    map[string]string // id -> staging path
	published map[string]string // target -> id
	creates   int
	publishes int
}

func (f *fakePlugin) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "fake.csi.test", VendorVersion: "v0.0.1"}, nil
}

func (f *fakePlugin) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	svc := func(t csi.PluginCapability_Service_Type) *csi.PluginCapability {
		return &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: t}}}
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		svc(csi.PluginCapability_Service_CONTROLLER_SERVICE),
		svc(csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS),
	}}, nil
}

func (f *fakePlugin) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func (f *fakePlugin) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	if !f.noCreateDelete {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (f *fakePlugin) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	if f.stage {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (f *fakePlugin) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	resp := &csi.NodeGetInfoResponse{NodeId: "fake-node"}
	if f.topology != nil {
		resp.AccessibleTopology = &csi.Topology{Segments: f.topology}
	}
	return resp, nil
}

func (f *fakePlugin) checkCap(c *csi.VolumeCapability) error {
	if c.GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
		return status.Error(codes.InvalidArgument, "want SINGLE_NODE_WRITER")
	}
	if (c.GetBlock() != nil) != f.wantBlock || (c.GetMount() != nil) == f.wantBlock {
		return status.Errorf(codes.InvalidArgument, "wrong access type %v", c.GetAccessType())
	}
	return nil
}

func (f *fakePlugin) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if f.creates <= f.abortCreates {
		return nil, status.Error(codes.Aborted, "busy")
	}
	if req.GetName() == "" || len(req.GetVolumeCapabilities()) != 1 {
		return nil, status.Error(codes.InvalidArgument, "bad name or capabilities")
	}
	if err := f.checkCap(req.GetVolumeCapabilities()[0]); err != nil {
		return nil, err
	}
	if got := req.GetCapacityRange().GetRequiredBytes(); got != f.wantSize {
		return nil, status.Errorf(codes.InvalidArgument, "required_bytes %d, want %d", got, f.wantSize)
	}
	if f.wantParams != nil && !maps.Equal(req.GetParameters(), f.wantParams) {
		return nil, status.Errorf(codes.InvalidArgument, "parameters %v", req.GetParameters())
	}
	if f.topology != nil {
		ar := req.GetAccessibilityRequirements()
		if len(ar.GetRequisite()) != 1 || !maps.Equal(ar.GetRequisite()[0].GetSegments(), f.topology) ||
			len(ar.GetPreferred()) != 1 || !maps.Equal(ar.GetPreferred()[0].GetSegments(), f.topology) {
			return nil, status.Errorf(codes.InvalidArgument, "accessibility requirements %v", ar)
		}
	}
	id := "id-" + req.GetName()
	f.vols[id] = req.GetName()
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      id,
		CapacityBytes: f.wantSize,
		VolumeContext: map[string]string{"name": req.GetName()},
	}}, nil
}

func (f *fakePlugin) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := req.GetVolumeId()
	if _, ok := f.staged[id]; ok {
		return nil, status.Error(codes.FailedPrecondition, "still staged")
	}
	for _, pid := range f.published {
		if pid == id {
			return nil, status.Error(codes.FailedPrecondition, "still published")
		}
	}
	delete(f.vols, id)
	return &csi.DeleteVolumeResponse{}, nil
}

// checkVolume verifies the volume exists and volume_context was passed on.
func (f *fakePlugin) checkVolume(id string, vctx map[string]string) error {
	name, ok := f.vols[id]
	if !ok {
		return status.Errorf(codes.NotFound, "volume %s", id)
	}
	if vctx["name"] != name {
		return status.Errorf(codes.InvalidArgument, "volume_context %v not passed on", vctx)
	}
	return nil
}

func (f *fakePlugin) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkVolume(req.GetVolumeId(), req.GetVolumeContext()); err != nil {
		return nil, err
	}
	if err := f.checkCap(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(req.GetStagingTargetPath()); err != nil || !fi.IsDir() {
		return nil, status.Errorf(codes.InvalidArgument, "staging path %q is not a directory", req.GetStagingTargetPath())
	}
	f.staged[req.GetVolumeId()] = req.GetStagingTargetPath()
	return &csi.NodeStageVolumeResponse{}, nil
}

func (f *fakePlugin) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.staged, req.GetVolumeId())
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (f *fakePlugin) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishes++
	if f.failPublishEvery > 0 && f.publishes%f.failPublishEvery == 0 {
		return nil, status.Error(codes.Internal, "injected publish failure")
	}
	if err := f.checkVolume(req.GetVolumeId(), req.GetVolumeContext()); err != nil {
		return nil, err
	}
	if err := f.checkCap(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	if f.stage && f.staged[req.GetVolumeId()] != req.GetStagingTargetPath() {
		return nil, status.Error(codes.FailedPrecondition, "not staged at staging_target_path")
	}
	target := req.GetTargetPath()
	if _, err := os.Stat(filepath.Dir(target)); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "parent of target: %v", err)
	}
	if _, err := os.Lstat(target); err == nil {
		return nil, status.Errorf(codes.InvalidArgument, "target %s already exists; the CO must not create it", target)
	}
	var err error
	if f.wantBlock {
		err = os.WriteFile(target, nil, 0o600)
	} else {
		err = os.Mkdir(target, 0o750)
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	f.published[target] = req.GetVolumeId()
	return &csi.NodePublishVolumeResponse{}, nil
}

func (f *fakePlugin) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leaveTarget {
		if err := os.Remove(req.GetTargetPath()); err != nil && !os.IsNotExist(err) {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	delete(f.published, req.GetTargetPath())
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// serve starts f on a fresh unix socket and returns the socket path.
func (f *fakePlugin) serve(t *testing.T) string {
	t.Helper()
	f.vols, f.staged, f.published = map[string]string{}, map[string]string{}, map[string]string{}
	// Not t.TempDir: unix socket paths are limited to ~108 bytes.
	dir, err := os.MkdirTemp("", "hvl")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, f)
	csi.RegisterControllerServer(srv, f)
	csi.RegisterNodeServer(srv, f)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil { // nil after Stop
			t.Errorf("fake plugin: Serve: %v", err)
		}
		os.RemoveAll(dir)
	})
	return sock
}

// assertClean checks that the plugin holds no volumes or mounts and the
// target dir is empty.
func (f *fakePlugin) assertClean(t *testing.T, targetDir string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.vols)+len(f.staged)+len(f.published) > 0 {
		t.Errorf("left behind: vols=%v staged=%v published=%v", f.vols, f.staged, f.published)
	}
	if entries, err := os.ReadDir(targetDir); err != nil || len(entries) > 0 {
		t.Errorf("target dir not empty: %v %v", entries, err)
	}
}

type runOutput struct {
	code           int
	stdout, stderr string
}

func runTool(t *testing.T, args ...string) runOutput {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	t.Logf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	return runOutput{code, stdout.String(), stderr.String()}
}

// field returns the value of key on the first line of out starting with
// prefix, e.g. field(out, "phase=create", "count").
func field(t *testing.T, out, prefix, key string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, prefix+" ") && line != prefix {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return v
			}
		}
	}
	t.Fatalf("no %s= on a line starting with %q", key, prefix)
	return ""
}

func wantField(t *testing.T, out, prefix, key, want string) {
	t.Helper()
	if got := field(t, out, prefix, key); got != want {
		t.Errorf("%s %s=%s, want %s", prefix, key, got, want)
	}
}

func lastJSONLine(t *testing.T, out string) jsonReport {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var jr jsonReport
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &jr); err != nil {
		t.Fatalf("last line is not JSON: %v", err)
	}
	return jr
}

func TestRunMountWithStage(t *testing.T) {
	f := &fakePlugin{
		stage:      true,
		topology:   map[string]string{"topology.test/node": "fake-node"},
		wantSize:   2 << 20,
		wantParams: map[string]string{"pool": "default", "x": "y"},
	}
	sock := f.serve(t)
	targetDir := t.TempDir()
	out := runTool(t, "--endpoint", "unix://"+sock, "--n", "40", "--c", "4", "--e", "7",
		"--size", "2Mi", "--param", "pool=default", "--param", "x=y", "--target-dir", targetDir, "--json")
	if out.code != exitOK {
		t.Fatalf("exit code %d", out.code)
	}
	f.assertClean(t, targetDir)

	for _, want := range []string{"plugin name=fake.csi.test version=v0.0.1", "node id=fake-node topology=topology.test/node=fake-node",
		"node=STAGE_UNSTAGE_VOLUME", "using stage=true topology=true access-type=mount"} {
		if !strings.Contains(out.stdout, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	for _, p := range measuredPhases {
		wantField(t, out.stdout, "phase="+p.String(), "count", "40")
		wantField(t, out.stdout, "phase="+p.String(), "errors", "0")
	}
	wantField(t, out.stdout, "summary", "ok", "40")
	wantField(t, out.stdout, "summary", "errors", "0")
	wantField(t, out.stdout, "summary", "existing_created", "7")
	wantField(t, out.stdout, "summary", "existing_deleted", "7")

	jr := lastJSONLine(t, out.stdout)
	if jr.CyclesOK != 40 || jr.Errors != 0 || len(jr.Phases) != 9 || jr.Phases[6].Phase != "cycle" ||
		jr.Phases[7].Phase != "up" || jr.Phases[8].Phase != "down" || jr.Phases[8].Count != 40 || jr.Floor ||
		jr.Phases[6].Count != 40 || jr.Phases[6].MaxUs <= 0 || jr.CyclesPerSecond <= 0 || jr.ExistingDeleted != 7 {
		t.Errorf("unexpected JSON report %+v", jr)
	}
}

func TestRunBlockWithoutStage(t *testing.T) {
	f := &fakePlugin{wantBlock: true, wantSize: 1 << 20}
	sock := f.serve(t)
	targetDir := t.TempDir()
	out := runTool(t, "--endpoint", sock, "--n", "10", "--c", "3", "--access-type", "block", "--target-dir", targetDir)
	if out.code != exitOK {
		t.Fatalf("exit code %d", out.code)
	}
	f.assertClean(t, targetDir)
	wantField(t, out.stdout, "phase=publish", "count", "10")
	wantField(t, out.stdout, "phase=stage", "count", "0")
	wantField(t, out.stdout, "phase=unstage", "count", "0")
}

func TestRunStageNeverAndAlways(t *testing.T) {
	for _, tc := range []struct {
		advertise  bool
		flag, want string
	}{
		{true, "never", "0"},
		{false, "always", "5"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			f := &fakePlugin{stage: tc.advertise, wantSize: 1 << 20}
			sock := f.serve(t)
			targetDir := t.TempDir()
			out := runTool(t, "--endpoint", sock, "--n", "5", "--stage", tc.flag, "--target-dir", targetDir)
			if out.code != exitOK {
				t.Fatalf("exit code %d", out.code)
			}
			f.assertClean(t, targetDir)
			wantField(t, out.stdout, "phase=stage", "count", tc.want)
		})
	}
}

func TestRunErrorsAndRetries(t *testing.T) {
	f := &fakePlugin{stage: true, wantSize: 1 << 20, abortCreates: 3, failPublishEvery: 4}
	sock := f.serve(t)
	targetDir := t.TempDir()
	out := runTool(t, "--endpoint", sock, "--n", "12", "--c", "1", "--target-dir", targetDir, "--json")
	if out.code != exitErrors {
		t.Fatalf("exit code %d, want %d", out.code, exitErrors)
	}
	// Failed publishes are still unstaged and deleted.
	f.assertClean(t, targetDir)

	wantField(t, out.stdout, "phase=create", "count", "12")
	wantField(t, out.stdout, "phase=create", "retries", "3")
	wantField(t, out.stdout, "phase=publish", "count", "9")
	wantField(t, out.stdout, "phase=publish", "errors", "3")
	wantField(t, out.stdout, "phase=unpublish", "count", "9")
	wantField(t, out.stdout, "phase=unstage", "count", "12")
	wantField(t, out.stdout, "phase=delete", "count", "12")
	wantField(t, out.stdout, "phase=cycle", "count", "9")
	wantField(t, out.stdout, "phase=cycle", "errors", "3")
	// up fails with its publish; down runs only after a good up.
	wantField(t, out.stdout, "phase=up", "count", "9")
	wantField(t, out.stdout, "phase=up", "errors", "3")
	wantField(t, out.stdout, "phase=down", "count", "9")
	wantField(t, out.stdout, "phase=down", "errors", "0")
	wantField(t, out.stdout, "summary", "failed", "3")
	wantField(t, out.stdout, "summary", "errors", "3")
	wantField(t, out.stdout, "summary", "retries", "3")
	if !strings.Contains(out.stdout, `error phase=publish code=Internal count=3 example="injected publish failure"`) {
		t.Error("missing error line for publish")
	}
	if !strings.Contains(out.stderr, "phase=publish") {
		t.Error("errors not logged to stderr")
	}
	if jr := lastJSONLine(t, out.stdout); jr.Errors != 3 || jr.Phases[2].ErrorCodes["Internal"] != 3 {
		t.Errorf("unexpected JSON report %+v", jr)
	}
}

func TestRunAbortedExhausted(t *testing.T) {
	f := &fakePlugin{wantSize: 1 << 20, abortCreates: maxAbortedRetries + 1}
	sock := f.serve(t)
	out := runTool(t, "--endpoint", sock, "--n", "2", "--c", "1", "--target-dir", t.TempDir())
	if out.code != exitErrors {
		t.Fatalf("exit code %d, want %d", out.code, exitErrors)
	}
	wantField(t, out.stdout, "phase=create", "count", "1")
	wantField(t, out.stdout, "phase=create", "errors", "1")
	wantField(t, out.stdout, "phase=create", "retries", fmt.Sprint(maxAbortedRetries))
}

func TestRunLeftoverTargetIsWarning(t *testing.T) {
	f := &fakePlugin{wantSize: 1 << 20, leaveTarget: true}
	sock := f.serve(t)
	targetDir := t.TempDir()
	out := runTool(t, "--endpoint", sock, "--n", "3", "--target-dir", targetDir)
	if out.code != exitOK {
		t.Fatalf("exit code %d", out.code)
	}
	f.assertClean(t, targetDir) // the tool removed the leftovers itself
	wantField(t, out.stdout, "summary", "leftover_targets", "3")
}

func TestRunKeepExisting(t *testing.T) {
	f := &fakePlugin{wantSize: 1 << 20}
	sock := f.serve(t)
	out := runTool(t, "--endpoint", sock, "--n", "1", "--e", "4", "--c", "2", "--keep-existing", "--name-prefix", "keep")
	if out.code != exitOK {
		t.Fatalf("exit code %d", out.code)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.vols) != 4 || f.vols["id-keep-e3"] != "keep-e3" {
		t.Errorf("want the 4 pre-existing volumes kept, have %v", f.vols)
	}
}

func TestRunProbeFailures(t *testing.T) {
	f := &fakePlugin{noCreateDelete: true}
	sock := f.serve(t)
	if out := runTool(t, "--endpoint", sock, "--n", "1"); out.code != exitSetup || !strings.Contains(out.stderr, "CREATE_DELETE_VOLUME") {
		t.Errorf("exit code %d, want %d with CREATE_DELETE_VOLUME message", out.code, exitSetup)
	}
	if out := runTool(t, "--endpoint", filepath.Join(t.TempDir(), "missing.sock"), "--n", "1", "--timeout", "2s"); out.code != exitSetup {
		t.Errorf("missing socket: exit code %d, want %d", out.code, exitSetup)
	}
}
