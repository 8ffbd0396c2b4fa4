package driver

import (
	"context"
	"errors"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/seed3e7d50b2/hostvol/pkg/volume"
)

// codeFor maps a backend error to its gRPC code. This is the one place
// where that decision is made; handlers return backend errors unchanged and
// the interceptor calls toStatus.
func codeFor(err error) codes.Code {
	switch {
	case errors.Is(err, volume.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, volume.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, volume.ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, volume.ErrInUse), errors.Is(err, volume.ErrNotAllowed),
		errors.Is(err, volume.ErrPoolUnavailable), errors.Is(err, volume.ErrNotStaged),
		errors.Is(err, volume.ErrOtherNode):
		return codes.FailedPrecondition
	case errors.Is(err, volume.ErrBusy):
		// Retryable: another operation (on this node, on another node of a
		// shared pool, or a last close of a loop device) is under way.
		return codes.Aborted
	case errors.Is(err, volume.ErrOutOfRange):
		return codes.OutOfRange
	case errors.Is(err, volume.ErrNoSpace):
		return codes.ResourceExhausted
	case errors.Is(err, volume.ErrCorrupt):
		return codes.DataLoss
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, os.ErrPermission):
		return codes.PermissionDenied
	default:
		return codes.Internal
	}
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
