package volume

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed3e7d50b2/hostvol/pkg/loop"
	"github.com/seed3e7d50b2/hostvol/pkg/records"
)

func TestTranslate(t *testing.T) {
	busy := translate(fmt.Errorf("detach /dev/loop3: %w", loop.ErrBusy))
	require.ErrorIs(t, busy, ErrBusy, "a loop device still closing is retryable")
	require.ErrorIs(t, busy, loop.ErrBusy, "the cause stays in the chain")
	require.ErrorIs(t, translate(fmt.Errorf("read: %w", records.ErrCorrupt)), ErrCorrupt)
	other := errors.New("boom")
	require.Equal(t, other, translate(other))
	require.NoError(t, translate(nil))
}

func TestCheckID(t *testing.T) {
	require.NoError(t, CheckID("hv-0123456789abcdef0123456789abcdef"))
	require.ErrorIs(t, CheckID("../.."), ErrInvalid)
	require.ErrorIs(t, CheckID("reallyfakevolumeid"), ErrNotFound)
	require.ErrorIs(t, CheckID(""), ErrInvalid)
}
