package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"

	"github.com/seed3e7d50b2/hostvol/pkg/endpoint"
)

// RPCTimeout bounds one RPC of a test: mkfs and resize2fs of the small
// images tests make take well under a second.
const RPCTimeout = time.Minute

// Client is a gRPC connection to one driver instance.
type Client struct {
	csi.IdentityClient
	csi.ControllerClient
	csi.NodeClient
	Conn *grpc.ClientConn
}

// Dial connects to the endpoint ep; the connection is closed in t.Cleanup.
func Dial(t testing.TB, ep string) *Client {
	t.Helper()
	conn, err := endpoint.Dial(ep)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn)
	t.Cleanup(c.Close)
	return c
}

// NewClient wraps a connection the caller made.
func NewClient(conn *grpc.ClientConn) *Client {
	return &Client{
		IdentityClient:   csi.NewIdentityClient(conn),
		ControllerClient: csi.NewControllerClient(conn),
		NodeClient:       csi.NewNodeClient(conn),
		Conn:             conn,
	}
}

// Close closes the connection.
func (c *Client) Close() { _ = c.Conn.Close() }

// Ctx bounds one RPC by RPCTimeout; it is cancelled in t.Cleanup.
func Ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), RPCTimeout)
	t.Cleanup(cancel)
	return c
}
