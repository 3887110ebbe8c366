//go:build !unix

package spool

import "os"

// lockFile does nothing where advisory locks are not available: two processes must not share a
// spool directory there.
func lockFile(*os.File) error { return nil }
