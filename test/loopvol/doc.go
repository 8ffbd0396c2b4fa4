// Package loopvol tests loop-device and raw block volumes for real: real
// mounts, real loop devices, real mkfs, resize2fs and xfs_growfs, driven
// through hostvol's gRPC API. It needs root; the harness it runs on is
// test/testutil.
package loopvol
