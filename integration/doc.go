// Package integration holds black-box tests: the twinblock binary run as a
// real process and driven by real clients (nbdinfo, qemu-io, nbdcopy, fio,
// nbdfuse with ext4, and the kernel's nbd-client inside a qemu VM).
//
// A missing tool skips its test on a developer's machine but fails it when
// CI=true or TWINBLOCK_REQUIRE_TOOLS=1, so CI cannot pass by skipping;
// .ci/run installs every tool.
package integration
