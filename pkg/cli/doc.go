// Package cli holds twinblock's cobra verbs (DESIGN.md "Commands"). Each
// verb turns flags into a call on the packages that do the work; none of
// them holds state of its own. Execute is the whole program: it returns
// the exit status and writes one clear line to stderr on failure.
package cli
