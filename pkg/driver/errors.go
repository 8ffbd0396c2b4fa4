package driver

import (
	"context"
	"errors"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// errorCodes maps each error hostvol's backend returns to its gRPC code, first
// match wins. This is the one place where that decision is made; handlers
// return backend errors unchanged and the interceptor calls toStatus.
var errorCodes = []struct {
	err  error
	code codes.Code
}{
	{volume.ErrNotFound, codes.NotFound},
	{volume.ErrInvalid, codes.InvalidArgument},
	{volume.ErrAlreadyExists, codes.AlreadyExists},
	{volume.ErrInUse, codes.FailedPrecondition},
	{volume.ErrNotAllowed, codes.FailedPrecondition},
	{volume.ErrPoolUnavailable, codes.FailedPrecondition},
	{volume.ErrNotStaged, codes.FailedPrecondition},
	{volume.ErrOtherNode, codes.FailedPrecondition},
	// Retryable: another operation (on this node, on another node of a
	// shared pool, or a last close of a loop device) is under way.
	{volume.ErrBusy, codes.Aborted},
	{volume.ErrOutOfRange, codes.OutOfRange},
	{volume.ErrNoSpace, codes.ResourceExhausted},
	// A restore or clone asked of a node that does not hold its source:
	// the external-provisioner then places the claim elsewhere.
	{volume.ErrElsewhere, codes.ResourceExhausted},
	{volume.ErrCorrupt, codes.DataLoss},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{os.ErrPermission, codes.PermissionDenied},
}

// codeFor maps a backend error to its gRPC code; anything else is INTERNAL.
func codeFor(err error) codes.Code {
	for _, ec := range errorCodes {
		if errors.Is(err, ec.err) {
			return ec.code
		}
	}
	return codes.Internal
}

// toStatus turns any error into a gRPC status error, keeping statuses
// that handlers created on purpose.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeFor(err), err.Error())
}
