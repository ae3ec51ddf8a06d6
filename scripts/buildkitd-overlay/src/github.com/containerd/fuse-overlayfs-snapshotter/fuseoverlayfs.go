// Package fuseoverlayfs is strata's stand-in for
// github.com/containerd/fuse-overlayfs-snapshotter, which Debian does not package.
//
// buildkitd only falls back to fuse-overlayfs when the kernel's overlayfs is
// unusable (rootless setups); strata's dev daemon runs as root on overlayfs, so
// this build simply reports the snapshotter as unavailable and buildkitd moves
// on to the next choice ("native").
package fuseoverlayfs

import (
	"errors"

	"github.com/containerd/containerd/snapshots"
)

// ErrNotBuiltIn is returned by every function of this package.
var ErrNotBuiltIn = errors.New("fuse-overlayfs snapshotter is not built into this buildkitd")

// SnapshotterConfig mirrors the upstream options type; no option has an effect.
type SnapshotterConfig struct{}

// Opt configures the snapshotter (accepted for API compatibility, ignored).
type Opt func(config *SnapshotterConfig) error

// Supported reports whether fuse-overlayfs can be used at root: never, here.
func Supported(root string) error {
	return ErrNotBuiltIn
}

// NewSnapshotter always fails with ErrNotBuiltIn.
func NewSnapshotter(root string, opts ...Opt) (snapshots.Snapshotter, error) {
	return nil, ErrNotBuiltIn
}
