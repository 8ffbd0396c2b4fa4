package driver

import (
	"context"

	"google.golang.org/grpc"
)

// Intercept lets the external tests call the interceptor directly.
func (d *Driver) Intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return d.intercept(ctx, req, info, handler)
}
