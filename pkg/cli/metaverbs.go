package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinblock/twinblock/pkg/daemon"
	"github.com/twinblock/twinblock/pkg/disk"
	"github.com/twinblock/twinblock/pkg/genid"
	"github.com/twinblock/twinblock/pkg/meta"
)

// metaDisks is a resource's backing disk and meta device, opened.
type metaDisks struct {
	locks     []*os.File
	data      disk.Disk // the backing disk
	md        disk.Disk // the meta device: data itself when internal
	mdPath    string
	placement meta.Placement
}

func (d *metaDisks) Close() {
	if d.md != d.data {
		_ = d.md.Close()
	}
	_ = d.data.Close()
	for _, l := range d.locks {
		_ = l.Close()
	}
}

// openMetaDisks opens this node's backing disk and meta device.
func openMetaDisks(t target, readOnly bool) (*metaDisks, error) {
	if t.self.Disk == "" {
		return nil, fmt.Errorf("%s: host %s is diskless (disk none): it has no metadata", t.res.Name, t.self.Name)
	}
	// A disk attached by a running daemon is refused (readers share the
	// lock with each other, not with the daemon).
	lock, err := disk.Lock(t.self.Disk, !readOnly)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.res.Name, err)
	}
	data, err := disk.OpenFile(t.self.Disk, disk.FileOptions{ReadOnly: readOnly})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("%s: %w", t.res.Name, err)
	}
	d := &metaDisks{locks: []*os.File{lock}, data: data, md: data, mdPath: t.self.Disk}
	md := t.self.MetaDisk
	if md.Internal {
		d.placement = meta.InternalPlacement
		return d, nil
	}
	d.placement = meta.ExternalPlacement(md.Index)
	if md.Path != t.self.Disk && md.Index < 0 { // an indexed meta device is shared
		mdLock, err := disk.Lock(md.Path, !readOnly)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("%s: meta-disk: %w", t.res.Name, err)
		}
		d.locks = append(d.locks, mdLock)
	}
	if d.md, err = disk.OpenFile(md.Path, disk.FileOptions{ReadOnly: readOnly}); err != nil {
		d.md = data
		d.Close()
		return nil, fmt.Errorf("%s: meta-disk: %w", t.res.Name, err)
	}
	d.mdPath = md.Path
	return d, nil
}

// eachTarget runs fn for every resource the argument names.
func eachTarget(cmd *cobra.Command, g *globals, name string, fn func(target) error) error {
	warn := func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) }
	ts, err := g.targets(name, warn)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if err := fn(t); err != nil {
			return err
		}
	}
	return nil
}

// eachMetaDisks runs fn with this node's disks of every resource the
// argument names, opened (read-only if asked) and closed afterwards.
func eachMetaDisks(cmd *cobra.Command, g *globals, name string, readOnly bool, fn func(target, *metaDisks) error) error {
	return eachTarget(cmd, g, name, func(t target) error {
		d, err := openMetaDisks(t, readOnly)
		if err != nil {
			return err
		}
		defer d.Close()
		return fn(t, d)
	})
}

func newCreateMDCmd(g *globals) *cobra.Command {
	var (
		force       bool
		granularity int
	)
	cmd := &cobra.Command{
		Use:   "create-md RES [--force]",
		Short: "Write fresh metadata: generation identifiers, an empty bitmap and activity log",
		Long: `create-md writes new metadata for this node's disk of resource RES (or
all): the superblock with the "just created" generation, a zeroed bitmap
and an empty activity log, where the meta-disk statement says (internal:
at the end of the disk, which shrinks the exported size).

It refuses to overwrite metadata that is already there (valid or not)
unless --force is given. The disk must not be attached.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.dryRun {
				return dryRun(cmd, args, "force", "bitmap-granularity")
			}
			return eachMetaDisks(cmd, g, args[0], false, func(t target, d *metaDisks) error {
				return createMD(cmd.OutOrStdout(), t, d, force, granularity)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing metadata")
	cmd.Flags().IntVar(&granularity, "bitmap-granularity", meta.DefaultGranularity,
		"bytes per bitmap bit: a power of two from 4096 to 1048576 (DRBD 9.3)")
	return cmd
}

func createMD(w io.Writer, t target, d *metaDisks, force bool, granularity int) error {
	al := int(t.res.Disk.Int("al-extents"))
	l, err := meta.ComputeLayout(d.placement, d.data.Size(), d.md.Size(), granularity, al)
	if err != nil {
		return fmt.Errorf("%s: %w", t.res.Name, err)
	}
	old, _, err := meta.Probe(d.md, d.placement, d.mdPath)
	switch {
	case err == nil && !force:
		return fmt.Errorf("%s: valid metadata found on %s at offset %d (current UUID %016X); use --force to overwrite it",
			t.res.Name, d.mdPath, old.MDOffset, old.GI[genid.Current])
	case err != nil && !errors.Is(err, meta.ErrNoMetadata) && !force:
		return fmt.Errorf("%s: %w; use --force to overwrite it", t.res.Name, err)
	}
	fmt.Fprintf(w, "%s: writing meta data on %s (meta-disk %s)...\n", t.res.Name, d.mdPath, l.Placement)
	fmt.Fprintf(w, "initializing activity log (%d extents, %d KiB ring)\n", l.ALExtents, l.ALSize>>10)
	fmt.Fprintf(w, "initializing bitmap (%d KB) to all zero\n", l.BMSize>>10)
	if _, err := meta.Format(d.md, l); err != nil {
		return fmt.Errorf("%s: %w", t.res.Name, err)
	}
	fmt.Fprintf(w, "New twinblock meta data block successfully created.\n")
	fmt.Fprintf(w, "usable data size: %d bytes (%d KiB) of %d\n", l.DataSize, l.DataSize>>10, d.data.Size())
	if l.DataSize < l.Capacity && !l.Placement.Internal {
		fmt.Fprintf(w, "warning: the indexed meta-data layout covers only %d of the disk's %d bytes\n", l.DataSize, l.Capacity)
	}
	return nil
}

func newDumpMDCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dump-md RES",
		Short: "Print the metadata in text, as drbdmeta dump-md",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachMetaDisks(cmd, g, args[0], true, func(t target, d *metaDisks) error {
				s, err := meta.Inspect(d.md, d.placement, d.mdPath)
				if err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				return s.WriteDump(cmd.OutOrStdout(), d.mdPath)
			})
		},
	}
}

func newShowGICmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show-gi RES",
		Short: "Explain the generation identifiers and flags, as drbdadm show-gi",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachMetaDisks(cmd, g, args[0], true, func(t target, d *metaDisks) error {
				sb, warn, err := meta.Probe(d.md, d.placement, d.mdPath)
				if err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				if warn != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+warn)
				}
				return genid.WriteShowGI(cmd.OutOrStdout(), sb.GI, sb.Flags)
			})
		},
	}
}

// newGetGICmd is drbdadm get-gi: the generation identifiers and flags
// in one line. A resource the daemon has up answers from its state
// machine; otherwise the metadata on the detached disk answers, as
// drbdmeta's get-gi.
func newGetGICmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get-gi RES",
		Short: "Print the generation identifiers and flags in one line, as drbdadm get-gi",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachTarget(cmd, g, args[0], func(t target) error {
				resp, err := daemon.Call(g.control, daemon.Request{Verb: "get-gi", Resource: t.res.Name}, time.Minute)
				if err == nil && resp.Error == "" && len(resp.Resources) == 1 && resp.Resources[0].Configured {
					_, err = io.WriteString(cmd.OutOrStdout(), resp.Text)
					return err
				}
				d, err := openMetaDisks(t, true)
				if err != nil {
					return err
				}
				defer d.Close()
				sb, warn, err := meta.Probe(d.md, d.placement, d.mdPath)
				if err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				if warn != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+warn)
				}
				_, err = io.WriteString(cmd.OutOrStdout(), genid.GetGI(sb.GI, sb.Flags))
				return err
			})
		},
	}
}

// newApplyALCmd is drbdadm apply-al: on a detached disk whose activity
// log is not clean (a crash while attached), the extents it holds are
// marked out of sync in the bitmap and the log is closed clean, as
// attaching would do.
func newApplyALCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "apply-al RES",
		Short: "Apply the activity log to the bitmap of a detached disk, as drbdadm apply-al",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.dryRun {
				return dryRun(cmd, args)
			}
			return eachMetaDisks(cmd, g, args[0], false, func(t target, d *metaDisks) error {
				sb, _, err := meta.Probe(d.md, d.placement, d.mdPath)
				if err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				if sb.Flags&genid.FlagALClean != 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: the activity log is clean: nothing to apply\n", t.res.Name)
					return nil
				}
				m, err := meta.Open(d.md, d.placement, meta.Options{Name: d.mdPath})
				if err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				n := len(m.Recovered())
				if err := m.Close(); err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: activity log applied: %d extents marked out of sync; the log is clean\n", t.res.Name, n)
				return nil
			})
		},
	}
}

// newWipeMDCmd is drbdadm wipe-md: the superblock block is zeroed, so
// that the disk has no twinblock metadata any more (create-md writes new
// metadata without --force). It asks for "yes" on stdin, as drbdmeta,
// unless --force is given.
func newWipeMDCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "wipe-md RES [--force]",
		Short: "Destroy the metadata of a detached disk, as drbdadm wipe-md",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.dryRun {
				return dryRun(cmd, args, "force")
			}
			return eachMetaDisks(cmd, g, args[0], false, func(t target, d *metaDisks) error {
				if _, _, err := meta.Probe(d.md, d.placement, d.mdPath); errors.Is(err, meta.ErrNoMetadata) {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: no metadata on %s: nothing to wipe\n", t.res.Name, d.mdPath)
					return nil
				}
				if !force {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: do you really want to wipe out the metadata on %s?\n[need to type 'yes' to confirm] ", t.res.Name, d.mdPath)
					answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
					if strings.TrimSpace(answer) != "yes" {
						return fmt.Errorf("%s: wipe-md not confirmed: the metadata stays", t.res.Name)
					}
				}
				off := meta.SuperblockOffset(d.placement, d.md.Size())
				if err := d.md.WriteAt(make([]byte, meta.SuperblockSize), off, true); err != nil {
					return fmt.Errorf("%s: wiping the superblock at offset %d of %s: %w", t.res.Name, off, d.mdPath, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: metadata on %s wiped\n", t.res.Name, d.mdPath)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	return cmd
}

func newNewCurrentUUIDCmd(g *globals) *cobra.Command {
	var clearBitmap bool
	cmd := &cobra.Command{
		Use:   "new-current-uuid RES [--clear-bitmap]",
		Short: "Start a new data generation on a detached disk",
		Long: `new-current-uuid starts a new data generation on this node's disk, as
drbdadm new-current-uuid on a StandAlone node: an older bitmap UUID moves
into the history, the current UUID becomes the bitmap UUID, and a new
random current UUID is generated.

With --clear-bitmap the bitmap's bits are cleared too. DRBD's "skip the
initial sync" procedure (--clear-bitmap on a connected pair of freshly
created disks, which also marks both UpToDate) needs the peer link and is
not available yet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.dryRun {
				return dryRun(cmd, args, "clear-bitmap")
			}
			return eachMetaDisks(cmd, g, args[0], false, func(t target, d *metaDisks) error {
				var data disk.Disk
				if d.md != d.data {
					data = d.data
				}
				m, err := meta.Open(d.md, d.placement, meta.Options{Name: d.mdPath, Data: data})
				if err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				for _, w := range m.Warnings() {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
				}
				err = m.NewCurrentUUID(false, clearBitmap)
				if cerr := m.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return fmt.Errorf("%s: %w", t.res.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s", t.res.Name, genid.GetGI(m.Superblock().GI, m.Superblock().Flags))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&clearBitmap, "clear-bitmap", false, "clear the bitmap too (skip the resync against the old generation)")
	return cmd
}
