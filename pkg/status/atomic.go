package status

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces the file at path with data so that a reader
// opening path sees either the old content or the new one, never a mix or
// a short file:
//
//  1. it writes data to a new temporary file in the same directory
//     (".<name>.tmp-<random>", so a rename never crosses a file system),
//  2. sets its mode to perm exactly (not masked by the umask: a status file
//     must be readable by the monitoring user whatever the daemon's umask),
//  3. fsyncs and closes it,
//  4. renames it over path (atomic on POSIX file systems),
//  5. fsyncs the directory, so that after a crash path names either the
//     old file or the complete new one.
//
// On any error before the rename the temporary file is removed and path is
// untouched. Errors carry the "status:" prefix and wrap the cause.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("status: writing %s: %w", path, err)
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if err != nil && !renamed {
			_ = f.Close() // may already be closed; the first error is the one to report
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("status: writing %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("status: writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("status: syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("status: closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("status: renaming %s to %s: %w", tmp, path, err)
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		// The new content is in place; only its durability across a crash
		// is in doubt. Report it, but do not remove the file.
		return fmt.Errorf("status: syncing directory of %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
