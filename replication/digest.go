package replication

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// ErrUnknownDigest: a csums-alg or verify-alg this build does not know.
var ErrUnknownDigest = errors.New("replication: unknown csums/verify algorithm")

// digestAlgs is indexed by DigestAlg. md5 and sha1 are there because
// DRBD configurations name them, not for their strength: a resync
// checksum guards against accidents, not against the peer.
var digestAlgs = [...]struct {
	name string
	size int
	sum  func(dst, b []byte) []byte
}{
	DigestNone: {"none", 0, nil},
	DigestCRC32C: {"crc32c", 4, func(dst, b []byte) []byte {
		return be.AppendUint32(dst, crc32.Checksum(b, castagnoli))
	}},
	DigestMD5: {"md5", md5.Size, func(dst, b []byte) []byte {
		s := md5.Sum(b)
		return append(dst, s[:]...)
	}},
	DigestSHA1: {"sha1", sha1.Size, func(dst, b []byte) []byte {
		s := sha1.Sum(b)
		return append(dst, s[:]...)
	}},
	DigestSHA256: {"sha256", sha256.Size, func(dst, b []byte) []byte {
		s := sha256.Sum256(b)
		return append(dst, s[:]...)
	}},
}

var _ [MaxDigestSize - sha256.Size]struct{} // MaxDigestSize holds the largest

// digestAlgByName maps a csums-alg/verify-alg value ("" = none) to its
// DigestAlg, in any letter case.
func digestAlgByName(name string) (DigestAlg, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		return DigestNone, nil
	}
	for a := DigestCRC32C; a <= lastDigestAlg; a++ {
		if digestAlgs[a].name == n {
			return a, nil
		}
	}
	return DigestNone, fmt.Errorf("%w %q (want crc32c, md5, sha1 or sha256)", ErrUnknownDigest, name)
}

// Digest returns the digest function of a csums-alg or verify-alg
// ("crc32c", "md5", "sha1", "sha256"; any letter case) and its size in
// bytes, or an error wrapping ErrUnknownDigest that names the unknown
// algorithm. The function appends the digest of b to dst (crc32c as 4
// big-endian bytes) and allocates nothing when dst has room. This is
// what LinkConfig.CsumsAlg and VerifyAlg compute on both nodes: a node
// passes Resync the digest of its whole range, and Verify one digest per
// BlockSize block.
func Digest(alg string) (func(dst, b []byte) []byte, int, error) {
	a, err := digestAlgByName(alg)
	if err == nil && a == DigestNone {
		err = fmt.Errorf("%w %q (want crc32c, md5, sha1 or sha256)", ErrUnknownDigest, alg)
	}
	if err != nil {
		return nil, 0, err
	}
	return digestAlgs[a].sum, digestAlgs[a].size, nil
}

// appendDigest appends the digest of b under a (not DigestNone).
func appendDigest(a DigestAlg, dst, b []byte) []byte { return digestAlgs[a].sum(dst, b) }
