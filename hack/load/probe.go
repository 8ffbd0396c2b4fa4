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
	info := &pluginInfo{}
	rctx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, cfg.timeout) }

	c, cancel := rctx()
	pi, err := cl.id.GetPluginInfo(c, &csi.GetPluginInfoRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("GetPluginInfo: %w", err)
	}
	info.name, info.version = pi.GetName(), pi.GetVendorVersion()

	c, cancel = rctx()
	pr, err := cl.id.Probe(c, &csi.ProbeRequest{})
	cancel()
	switch {
	case err != nil:
		fmt.Fprintf(warn, "hostvol-load: warning: Probe: %v\n", err)
	case pr.GetReady() != nil && !pr.GetReady().GetValue():
		fmt.Fprintln(warn, "hostvol-load: warning: Probe reports the plugin is not ready")
	}

	c, cancel = rctx()
	pc, err := cl.id.GetPluginCapabilities(c, &csi.GetPluginCapabilitiesRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("GetPluginCapabilities: %w", err)
	}
	for _, pcap := range pc.GetCapabilities() {
		if s := pcap.GetService(); s != nil {
			info.pluginCaps = append(info.pluginCaps, s.GetType().String())
		}
		if e := pcap.GetVolumeExpansion(); e != nil {
			info.pluginCaps = append(info.pluginCaps, "VOLUME_EXPANSION_"+e.GetType().String())
		}
	}

	c, cancel = rctx()
	cc, err := cl.ctrl.ControllerGetCapabilities(c, &csi.ControllerGetCapabilitiesRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("ControllerGetCapabilities: %w", err)
	}
	for _, ccap := range cc.GetCapabilities() {
		info.controllerCaps = append(info.controllerCaps, ccap.GetRpc().GetType().String())
	}
	if !slices.Contains(info.controllerCaps, csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME.String()) {
		return nil, fmt.Errorf("controller does not advertise CREATE_DELETE_VOLUME")
	}
	if slices.Contains(info.controllerCaps, csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME.String()) {
		fmt.Fprintln(warn, "hostvol-load: warning: controller advertises PUBLISH_UNPUBLISH_VOLUME, but this tool never calls ControllerPublishVolume")
	}

	c, cancel = rctx()
	nc, err := cl.node.NodeGetCapabilities(c, &csi.NodeGetCapabilitiesRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	for _, ncap := range nc.GetCapabilities() {
		info.nodeCaps = append(info.nodeCaps, ncap.GetRpc().GetType().String())
	}
	advertised := slices.Contains(info.nodeCaps, csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME.String())
	switch cfg.stage {
	case stageAlways:
		info.useStage = true
		if !advertised {
			fmt.Fprintln(warn, "hostvol-load: warning: --stage=always but node does not advertise STAGE_UNSTAGE_VOLUME")
		}
	case stageAuto:
		info.useStage = advertised
	}

	c, cancel = rctx()
	ni, err := cl.node.NodeGetInfo(c, &csi.NodeGetInfoRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("NodeGetInfo: %w", err)
	}
	info.nodeID = ni.GetNodeId()
	info.topology = ni.GetAccessibleTopology().GetSegments()
	return info, nil
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
