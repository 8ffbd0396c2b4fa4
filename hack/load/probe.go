package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
)

// clients holds the three CSI service clients over one shared connection.
type clients struct {
	id   csi.IdentityClient
	ctrl csi.ControllerClient
	node csi.NodeClient
}

func newClients(conn *grpc.ClientConn) *clients {
	return &clients{
		id:   csi.NewIdentityClient(conn),
		ctrl: csi.NewControllerClient(conn),
		node: csi.NewNodeClient(conn),
	}
}

// pluginInfo is what probe learned about the plugin.
type pluginInfo struct {
	name, version  string
	nodeID         string
	topology       map[string]string // NodeGetInfo accessible_topology segments
	pluginCaps     []string
	controllerCaps []string
	nodeCaps       []string
	useStage       bool
}

// probe queries identity, controller and node services and decides which
// optional RPCs the cycle uses. Missing CREATE_DELETE_VOLUME is fatal;
// other oddities are reported to warn.
func probe(ctx context.Context, cl *clients, cfg *config, warn io.Writer) (*pluginInfo, error) {
	p := &prober{ctx: ctx, cl: cl, cfg: cfg, warn: warn, info: &pluginInfo{}}
	for _, step := range []func() error{p.identity, p.controller, p.node} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return p.info, nil
}

// prober holds what the probe steps share; each step fills in info.
type prober struct {
	ctx  context.Context
	cl   *clients
	cfg  *config
	warn io.Writer
	info *pluginInfo
}

// probeCall makes one probe RPC with the per-RPC timeout; its error is
// prefixed with the RPC's name.
func probeCall[Req, Resp any](p *prober, name string, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	c, cancel := context.WithTimeout(p.ctx, p.cfg.timeout)
	defer cancel()
	resp, err := rpc(c, req)
	if err != nil {
		return resp, fmt.Errorf("%s: %w", name, err)
	}
	return resp, nil
}

// identity reads the plugin's name, version and capabilities, and
// warns when Probe fails or reports the plugin not ready.
func (p *prober) identity() error {
	pi, err := probeCall(p, "GetPluginInfo", p.cl.id.GetPluginInfo, &csi.GetPluginInfoRequest{})
	if err != nil {
		return err
	}
	p.info.name, p.info.version = pi.GetName(), pi.GetVendorVersion()

	pr, err := probeCall(p, "Probe", p.cl.id.Probe, &csi.ProbeRequest{})
	switch {
	case err != nil:
		fmt.Fprintf(p.warn, "hostvol-load: warning: %v\n", err)
	case pr.GetReady() != nil && !pr.GetReady().GetValue():
		fmt.Fprintln(p.warn, "hostvol-load: warning: Probe reports the plugin is not ready")
	}

	pc, err := probeCall(p, "GetPluginCapabilities", p.cl.id.GetPluginCapabilities, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		return err
	}
	for _, pcap := range pc.GetCapabilities() {
		if s := pcap.GetService(); s != nil {
			p.info.pluginCaps = append(p.info.pluginCaps, s.GetType().String())
		}
		if e := pcap.GetVolumeExpansion(); e != nil {
			p.info.pluginCaps = append(p.info.pluginCaps, "VOLUME_EXPANSION_"+e.GetType().String())
		}
	}
	return nil
}

// controller reads the controller's capabilities: CREATE_DELETE_VOLUME
// is required, PUBLISH_UNPUBLISH_VOLUME draws a warning.
func (p *prober) controller() error {
	cc, err := probeCall(p, "ControllerGetCapabilities", p.cl.ctrl.ControllerGetCapabilities, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		return err
	}
	for _, ccap := range cc.GetCapabilities() {
		p.info.controllerCaps = append(p.info.controllerCaps, ccap.GetRpc().GetType().String())
	}
	if !slices.Contains(p.info.controllerCaps, csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME.String()) {
		return fmt.Errorf("controller does not advertise CREATE_DELETE_VOLUME")
	}
	if slices.Contains(p.info.controllerCaps, csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME.String()) {
		fmt.Fprintln(p.warn, "hostvol-load: warning: controller advertises PUBLISH_UNPUBLISH_VOLUME, but this tool never calls ControllerPublishVolume")
	}
	return nil
}

// node reads the node's capabilities, decides whether to stage (by
// --stage), and reads the node ID and topology.
func (p *prober) node() error {
	nc, err := probeCall(p, "NodeGetCapabilities", p.cl.node.NodeGetCapabilities, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return err
	}
	for _, ncap := range nc.GetCapabilities() {
		p.info.nodeCaps = append(p.info.nodeCaps, ncap.GetRpc().GetType().String())
	}
	advertised := slices.Contains(p.info.nodeCaps, csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME.String())
	switch p.cfg.stage {
	case stageAlways:
		p.info.useStage = true
		if !advertised {
			fmt.Fprintln(p.warn, "hostvol-load: warning: --stage=always but node does not advertise STAGE_UNSTAGE_VOLUME")
		}
	case stageAuto:
		p.info.useStage = advertised
	}

	ni, err := probeCall(p, "NodeGetInfo", p.cl.node.NodeGetInfo, &csi.NodeGetInfoRequest{})
	if err != nil {
		return err
	}
	p.info.nodeID = ni.GetNodeId()
	p.info.topology = ni.GetAccessibleTopology().GetSegments()
	return nil
}

// printProbe prints what was found and how the run is configured.
func printProbe(w io.Writer, cfg *config, info *pluginInfo, targetDir string) {
	orNone := func(s string) string {
		if s == "" {
			return "none"
		}
		return s
	}
	fmt.Fprintf(w, "plugin name=%s version=%s\n", info.name, orNone(info.version))
	fmt.Fprintf(w, "node id=%s topology=%s\n", info.nodeID, orNone(formatMap(info.topology)))
	fmt.Fprintf(w, "capabilities plugin=%s controller=%s node=%s\n",
		orNone(strings.Join(info.pluginCaps, ",")),
		orNone(strings.Join(info.controllerCaps, ",")),
		orNone(strings.Join(info.nodeCaps, ",")))
	fmt.Fprintf(w, "using stage=%t topology=%t access-type=%s fs-type=%q size=%d params=%s\n",
		info.useStage, len(info.topology) > 0, cfg.accessType, cfg.fsType, cfg.size, orNone(formatMap(cfg.params)))
	fmt.Fprintf(w, "run n=%d c=%d e=%d timeout=%s name-prefix=%s target-dir=%s\n",
		cfg.n, cfg.c, cfg.e, cfg.timeout, cfg.namePrefix, targetDir)
}
