// Package endpoint reads a CSI endpoint (unix:///path/to/csi.sock,
// unix:/path, a plain /path, or tcp://host:port for development), listens on
// it and dials it. It is the one place that knows the endpoint syntax, so
// the options, the server, the client and the tests agree on it.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Parse splits unix:///path, unix:/path, a plain /path or tcp://host:port
// into a network ("unix" or "tcp") and an address. A socket path must be
// absolute.
func Parse(ep string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(ep, "unix://"):
		network, addr = "unix", strings.TrimPrefix(ep, "unix://")
	case strings.HasPrefix(ep, "unix:"):
		network, addr = "unix", strings.TrimPrefix(ep, "unix:")
	case strings.HasPrefix(ep, "tcp://"):
		network, addr = "tcp", strings.TrimPrefix(ep, "tcp://")
	case strings.HasPrefix(ep, "/"):
		network, addr = "unix", ep
	default:
		return "", "", fmt.Errorf("endpoint %q: want unix:///path/to/csi.sock or tcp://host:port", ep)
	}
	if addr == "" {
		return "", "", fmt.Errorf("endpoint %q has no address", ep)
	}
	if network == "unix" && !strings.HasPrefix(addr, "/") {
		return "", "", fmt.Errorf("endpoint %q: socket path must be absolute", ep)
	}
	return network, addr, nil
}

// Listen listens on the endpoint. For a unix socket, whatever file is left
// at its path (the socket of an earlier run that did not remove it) is
// removed first.
func Listen(ep string) (net.Listener, error) {
	network, addr, err := Parse(ep)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := os.Remove(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", addr, err)
		}
	}
	return net.Listen(network, addr)
}

// Dial returns a client connection to the endpoint, without transport
// security (a CSI socket is local). Like grpc.NewClient, it connects lazily:
// the first call waits for the connection and fails with UNAVAILABLE if
// nothing listens. opts are added after Dial's own.
func Dial(ep string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	network, addr, err := Parse(ep)
	if err != nil {
		return nil, err
	}
	// The target is a placeholder, which keeps the HTTP/2 authority a
	// plain "localhost": the dialer ignores it and dials addr.
	return grpc.NewClient("passthrough:///localhost", append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}),
	}, opts...)...)
}
