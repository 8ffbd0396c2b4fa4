package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/seed3e7d50b2/hostvol/pkg/bytesize"
	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
	"github.com/seed3e7d50b2/hostvol/pkg/params"
)

const clientUsage = `Usage: hostvol client [--endpoint EP] COMMAND [ARGS]

Talks to a running hostvol (or any CSI driver) over its socket.
EP defaults to $HOSTVOL_ENDPOINT, else unix:///csi/csi.sock.

Commands:
  info                                  plugin name, version, readiness, node, capabilities
  create NAME [--size 1Gi] [--mode rwo|rwop|rox|rwx] [--block] [--fs-type ext4|xfs] [--param k=v]...
                                        create a volume, print its ID (--param type=loop
                                        for a filesystem on a loop device, --block for raw block)
  delete ID                             delete a volume
  list                                  list volumes
  capacity [--param k=v]...             available capacity for a class
  stage ID STAGING_PATH [--block]       NodeStageVolume (loop: attach and mount)
  unstage ID STAGING_PATH               NodeUnstageVolume
  expand ID SIZE                        ControllerExpandVolume
  node-expand ID PATH                   NodeExpandVolume (grow device and filesystem)
  publish ID TARGET [--ro] [--mode M] [--staging PATH] [--block]
                                        bind-mount the volume at TARGET
  unpublish ID TARGET                   unmount TARGET
  stats ID PATH                         bytes and inodes of a published volume
`

func runClient(args []string) int {
	if err := client(args); err != nil {
		fmt.Fprintf(os.Stderr, "hostvol client: %v\n", err)
		return 1
	}
	return 0
}

type kvFlag map[string]string

func (k kvFlag) String() string { return "" }
func (k kvFlag) Set(v string) error {
	key, val, ok := strings.Cut(v, "=")
	if !ok || key == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	k[key] = val
	return nil
}

func client(args []string) error {
	fs := flag.NewFlagSet("hostvol client", flag.ContinueOnError)
	ep := os.Getenv("HOSTVOL_ENDPOINT")
	if ep == "" {
		ep = "unix:///csi/csi.sock"
	}
	fs.StringVar(&ep, "endpoint", ep, "CSI endpoint")
	fs.Usage = func() { fmt.Fprint(fs.Output(), clientUsage) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("a command is required")
	}
	conn, err := endpoint.Dial(ep)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := clients{
		id:   csi.NewIdentityClient(conn),
		ctrl: csi.NewControllerClient(conn),
		node: csi.NewNodeClient(conn),
	}
	err = c.run(ctx, fs.Arg(0), fs.Args()[1:])
	if errors.Is(err, errUnknownCommand) {
		fs.Usage()
	}
	return err
}

var errUnknownCommand = errors.New("unknown command")

// run runs one client command.
func (c clients) run(ctx context.Context, cmd string, rest []string) error {
	switch cmd {
	case "info":
		return c.info(ctx)
	case "create":
		return c.create(ctx, rest)
	case "delete":
		return c.oneID(rest, func(id string) error {
			_, err := c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			return err
		})
	case "list":
		return c.list(ctx)
	case "capacity":
		return c.capacity(ctx, rest)
	case "stage", "unstage", "unpublish", "stats", "node-expand":
		if len(rest) < 2 {
			return fmt.Errorf("%s takes ID and PATH", cmd)
		}
		sfs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		block := sfs.Bool("block", false, "raw block volume (stage)")
		if err := sfs.Parse(rest[2:]); err != nil {
			return err
		}
		return c.pathCmd(ctx, cmd, rest[0], rest[1], *block)
	case "expand":
		return c.expand(ctx, rest)
	case "publish":
		return c.publish(ctx, rest)
	default:
		return fmt.Errorf("%w %q", errUnknownCommand, cmd)
	}
}

// expand is "client expand ID SIZE" (ControllerExpandVolume).
func (c clients) expand(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return errors.New("expand takes ID and SIZE")
	}
	n, err := bytesize.Parse(args[1])
	if err != nil {
		return err
	}
	resp, err := c.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: args[0], CapacityRange: &csi.CapacityRange{RequiredBytes: n}})
	if err != nil {
		return err
	}
	fmt.Printf("capacity: %d bytes, node expansion required: %v\n", resp.GetCapacityBytes(), resp.GetNodeExpansionRequired())
	return nil
}

type clients struct {
	id   csi.IdentityClient
	ctrl csi.ControllerClient
	node csi.NodeClient
}

func (c clients) oneID(args []string, f func(string) error) error {
	if len(args) != 1 {
		return errors.New("one volume ID is required")
	}
	return f(args[0])
}

func (c clients) info(ctx context.Context) error {
	pi, err := c.id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return err
	}
	pr, err := c.id.Probe(ctx, &csi.ProbeRequest{})
	if err != nil {
		return err
	}
	ni, err := c.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("plugin:  %s %s\nready:   %v\nnode:    %s (max volumes %d, topology %v)\n",
		pi.GetName(), pi.GetVendorVersion(), pr.GetReady().GetValue(), ni.GetNodeId(), ni.GetMaxVolumesPerNode(), ni.GetAccessibleTopology().GetSegments())
	if cc, err := c.ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{}); err == nil {
		var s []string
		for _, x := range cc.GetCapabilities() {
			s = append(s, x.GetRpc().GetType().String())
		}
		fmt.Printf("controller: %s\n", strings.Join(s, " "))
	}
	if nc, err := c.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{}); err == nil {
		var s []string
		for _, x := range nc.GetCapabilities() {
			s = append(s, x.GetRpc().GetType().String())
		}
		fmt.Printf("node:       %s\n", strings.Join(s, " "))
	}
	return nil
}

var modes = map[string]csi.VolumeCapability_AccessMode_Mode{
	"rwo":  csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	"rwop": csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	"rox":  csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
	"rwx":  csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
}

// volCap builds a capability: block access, or mount access with fsType.
func volCap(mode string, block bool, fsType string) (*csi.VolumeCapability, error) {
	m, ok := modes[mode]
	if !ok {
		return nil, fmt.Errorf("mode %q: want rwo, rwop, rox or rwx", mode)
	}
	c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: m}}
	if block {
		c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}}
	}
	return c, nil
}

func (c clients) create(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	size := int64(1 << 30)
	bytesize.Var(fs, &size, "size", "capacity, a quantity such as 1Gi")
	mode := fs.String("mode", "rwo", "access mode: rwo, rwop, rox, rwx")
	block := fs.Bool("block", false, "raw block volume")
	fsType := fs.String("fs-type", "", "filesystem of a loop volume (ext4, xfs)")
	params := kvFlag{}
	fs.Var(params, "param", "StorageClass parameter key=value (repeatable)")
	if len(args) == 0 {
		return errors.New("create takes a NAME")
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	vc, err := volCap(*mode, *block, *fsType)
	if err != nil {
		return err
	}
	resp, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{vc},
		Parameters:         params,
	})
	if err != nil {
		return err
	}
	fmt.Println(resp.GetVolume().GetVolumeId())
	return nil
}

func (c clients) list(ctx context.Context) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VOLUME ID\tCAPACITY\tCONTEXT\tTOPOLOGY")
	token := ""
	for {
		resp, err := c.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 500, StartingToken: token})
		if err != nil {
			return err
		}
		for _, e := range resp.GetEntries() {
			fmt.Fprintln(w, listRow(e.GetVolume()))
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	return w.Flush()
}

// listRow is one line of "hostvol client list": a volume whose record
// cannot be read shows "?" as its capacity and why in the context column,
// so an admin sees what to repair.
func listRow(v *csi.Volume) string {
	var tops []string
	for _, t := range v.GetAccessibleTopology() {
		tops = append(tops, fmt.Sprint(t.GetSegments()))
	}
	capacity, context := strconv.FormatInt(v.GetCapacityBytes(), 10), fmt.Sprint(v.GetVolumeContext())
	if why, ok := v.GetVolumeContext()[params.KeyRecordUnreadable]; ok {
		capacity, context = "?", "UNREADABLE RECORD: "+why
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s", v.GetVolumeId(), capacity, context, strings.Join(tops, ","))
}

func (c clients) capacity(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("capacity", flag.ContinueOnError)
	params := kvFlag{}
	fs.Var(params, "param", "StorageClass parameter key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	resp, err := c.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: params})
	if err != nil {
		return err
	}
	fmt.Printf("available: %d bytes\n", resp.GetAvailableCapacity())
	return nil
}

func (c clients) pathCmd(ctx context.Context, cmd, id, path string, block bool) error {
	vc, _ := volCap("rwo", block, "")
	var err error
	switch cmd {
	case "node-expand":
		var resp *csi.NodeExpandVolumeResponse
		if resp, err = c.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: path}); err == nil {
			fmt.Printf("capacity: %d bytes\n", resp.GetCapacityBytes())
		}
	case "stage":
		_, err = c.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: path, VolumeCapability: vc})
	case "unstage":
		_, err = c.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: path})
	case "unpublish":
		_, err = c.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: path})
	case "stats":
		var resp *csi.NodeGetVolumeStatsResponse
		if resp, err = c.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: path}); err == nil {
			for _, u := range resp.GetUsage() {
				fmt.Printf("%-6s total=%d used=%d available=%d\n", u.GetUnit(), u.GetTotal(), u.GetUsed(), u.GetAvailable())
			}
		}
	}
	return err
}

func (c clients) publish(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return errors.New("publish takes ID and TARGET")
	}
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	ro := fs.Bool("ro", false, "read-only")
	mode := fs.String("mode", "rwo", "access mode: rwo, rwop, rox, rwx")
	staging := fs.String("staging", "", "staging path given to NodeStageVolume")
	block := fs.Bool("block", false, "raw block volume")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	vc, err := volCap(*mode, *block, "")
	if err != nil {
		return err
	}
	_, err = c.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: args[0], TargetPath: args[1], StagingTargetPath: *staging, VolumeCapability: vc, Readonly: *ro,
	})
	return err
}
