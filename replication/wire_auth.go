package replication

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// Peer authentication, DRBD's cram-hmac (net { cram-hmac-alg; shared-secret; }):
// each side sends an AuthChallenge with a fresh random nonce, answers the
// peer's challenge with an AuthResponse carrying
//
//	HMAC(shared-secret, peer's nonce || own node name)
//
// and checks the answer it gets against its own nonce and the peer's node
// name, then sends AuthResult. Binding the responder's name into the MAC
// means a response cannot be reflected back to the node that asked.

// ErrUnknownAlg: the cram-hmac-alg is not one we support.
var ErrUnknownAlg = errors.New("replication: unknown cram-hmac-alg")

// NonceLen is the size of the nonces NewNonce makes.
const NonceLen = 32

// NewNonce returns NonceLen random bytes for an AuthChallenge.
func NewNonce() []byte {
	b := make([]byte, NonceLen)
	_, _ = rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return b
}

// hashFor maps a cram-hmac-alg value to its hash. It accepts the names
// DRBD's configs use ("sha1", "sha256", ...), the kernel crypto API's
// "hmac(sha256)" form, in any letter case.
func hashFor(alg string) (func() hash.Hash, error) {
	name := strings.ToLower(strings.TrimSpace(alg))
	if inner, ok := strings.CutPrefix(name, "hmac("); ok {
		if inner, ok = strings.CutSuffix(inner, ")"); ok {
			name = inner
		}
	}
	switch name {
	case "sha1":
		return sha1.New, nil
	case "sha224":
		return sha256.New224, nil
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("%w %q (supported: sha1, sha224, sha256, sha384, sha512)", ErrUnknownAlg, alg)
}

// ChallengeResponse computes the answer to a challenge: the HMAC with hash
// alg, keyed by secret, of nonce followed by node, the responder's own
// node name. The result fits an AuthResponse (at most 64 bytes).
func ChallengeResponse(alg string, secret, nonce []byte, node string) ([]byte, error) {
	newHash, err := hashFor(alg)
	if err != nil {
		return nil, err
	}
	if len(secret) == 0 {
		return nil, errors.New("replication: empty shared-secret")
	}
	if len(nonce) < MinNonceLen || len(nonce) > MaxNonceLen {
		return nil, fmt.Errorf("%w: challenge of %d bytes, want %d..%d", ErrProtocol, len(nonce), MinNonceLen, MaxNonceLen)
	}
	mac := hmac.New(newHash, secret)
	mac.Write(nonce)
	mac.Write([]byte(node))
	return mac.Sum(nil), nil
}

// VerifyResponse reports whether response is the right answer from node to
// the challenge nonce, comparing in constant time. An unknown alg, an empty
// secret or a nonce of a bad size verify nothing.
func VerifyResponse(alg string, secret, nonce []byte, node string, response []byte) bool {
	want, err := ChallengeResponse(alg, secret, nonce, node)
	if err != nil {
		return false
	}
	return hmac.Equal(want, response)
}
