// Package client is a small NBD client: fixed newstyle handshake with
// NBD_OPT_GO (falling back to NBD_OPT_EXPORT_NAME), optional structured
// replies, and concurrent requests on one connection. twinblock uses it in
// the demo and in tests that must not depend on Debian's NBD tools; it is
// not meant to attach kernel devices.
package client
