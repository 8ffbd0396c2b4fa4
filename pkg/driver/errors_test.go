package driver

// Internal tests of the error mapping: codeFor and toStatus. The
// interceptor's tests, over a whole driver, are in driver_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
	"github.com/seed3e7d50b2/hostvol/pkg/volumeid"
)

func TestCodeFor(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{name: "volume_not_found", err: volume.ErrNotFound, want: codes.NotFound},
		{name: "invalid", err: volume.ErrInvalid, want: codes.InvalidArgument},
		{name: "already_exists", err: volume.ErrAlreadyExists, want: codes.AlreadyExists},
		{name: "in_use", err: volume.ErrInUse, want: codes.FailedPrecondition},
		{name: "not_allowed", err: volume.ErrNotAllowed, want: codes.FailedPrecondition},
		{name: "pool_unavailable", err: volume.ErrPoolUnavailable, want: codes.FailedPrecondition},
		{name: "other_node", err: volume.ErrOtherNode, want: codes.FailedPrecondition},
		{name: "no_space", err: volume.ErrNoSpace, want: codes.ResourceExhausted},
		{name: "corrupt_record", err: volume.ErrCorrupt, want: codes.DataLoss},
		{name: "busy", err: volume.ErrBusy, want: codes.Aborted},
		{name: "context_canceled", err: context.Canceled, want: codes.Canceled},
		{name: "deadline_exceeded", err: context.DeadlineExceeded, want: codes.DeadlineExceeded},
		{name: "permission", err: os.ErrPermission, want: codes.PermissionDenied},
		{name: "eacces_path_error", err: &fs.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, want: codes.PermissionDenied},
		{name: "eperm", err: syscall.EPERM, want: codes.PermissionDenied},
		{name: "unknown", err: errors.New("boom"), want: codes.Internal},
		{name: "io_error", err: &fs.PathError{Op: "write", Path: "/x", Err: syscall.EIO}, want: codes.Internal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, codeFor(tc.err))
			wrapped := fmt.Errorf("volume hv-x: step: %w", tc.err)
			require.Equal(t, tc.want, codeFor(wrapped), "wrapped")
			require.Equal(t, tc.want, codeFor(fmt.Errorf("outer: %w", wrapped)), "wrapped twice")
			require.Equal(t, tc.want, status.Code(toStatus(wrapped)), "through toStatus")
		})
	}
}

func TestCodeForBackendErrors(t *testing.T) {
	// The errors the backends really return, not only the bare sentinels.
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{name: "validate_malformed", err: volume.CheckID("../.."), want: codes.InvalidArgument},
		{name: "validate_foreign", err: volume.CheckID("reallyfakevolumeid"), want: codes.NotFound},
		{name: "validate_upper_case", err: volume.CheckID("HV-0123456789ABCDEF0123456789ABCDEF"), want: codes.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.err)
			require.Equal(t, tc.want, codeFor(tc.err))
		})
	}
}

func TestToStatus(t *testing.T) {
	require.NoError(t, toStatus(nil))

	kept := status.Error(codes.Aborted, "busy")
	require.Equal(t, kept, toStatus(kept), "a status made on purpose is kept as is")

	got := toStatus(fmt.Errorf("volume %s: %w", volumeid.FromName("v"), volume.ErrNoSpace))
	require.Equal(t, codes.ResourceExhausted, status.Code(got))
}
