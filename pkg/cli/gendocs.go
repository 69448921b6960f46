package cli

import (
	"io"

	"github.com/spf13/cobra"
)

// CommandTree is twinblock's command tree as Execute builds it, cobra's
// `completion` verb included (Execute adds that one when it runs), for the
// tools that document the verbs: internal/tools/gendocs writes the man
// pages that make install installs from it. Running it writes nowhere.
func CommandTree() *cobra.Command {
	root := newRoot(io.Discard, io.Discard)
	root.InitDefaultCompletionCmd()
	return root
}
