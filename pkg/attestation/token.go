package attestation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Result tokens are compact JWS (RFC 7515) signed with the verifier's
// Ed25519 key ("alg": "EdDSA"), so any service holding the verifier's
// public key can check a node's trust offline with a standard JWT library.

// Claims are the attestation result for one node.
type Claims struct {
	Issuer   string     `json:"iss"`
	Subject  string     `json:"sub"` // node ID
	IssuedAt int64      `json:"iat"`
	Expires  int64      `json:"exp"` // trusted until
	State    string     `json:"state"`
	Class    TrustClass `json:"class"`
	Build    string     `json:"build,omitempty"`
	EK       string     `json:"ek"` // EK fingerprint
	Reason   string     `json:"reason,omitempty"`
}

type jwsHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

var b64 = base64.RawURLEncoding

// SignToken returns the compact JWS of c.
func SignToken(c Claims, key ed25519.PrivateKey) (string, error) {
	h, err := json.Marshal(jwsHeader{Alg: "EdDSA", Typ: "JWT", Kid: KeyID(key.Public().(ed25519.PublicKey))})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	return signing + "." + b64.EncodeToString(ed25519.Sign(key, []byte(signing))), nil
}

// Token errors.
var (
	ErrTokenMalformed = errors.New("malformed token")
	ErrTokenSignature = errors.New("token signature does not verify")
	ErrTokenExpired   = errors.New("token expired")
	// ErrTokenKey: the token names (kid) a key other than the one given.
	ErrTokenKey = errors.New("token was signed by another key")
)

// VerifyToken checks a token's signature and expiry and returns its
// claims.
func VerifyToken(tok string, pub ed25519.PublicKey, now time.Time) (*Claims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, ErrTokenMalformed
	}
	hb, err1 := b64.DecodeString(parts[0])
	pb, err2 := b64.DecodeString(parts[1])
	sig, err3 := b64.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenMalformed, err)
	}
	var h jwsHeader
	if err := json.Unmarshal(hb, &h); err != nil || h.Alg != "EdDSA" {
		return nil, fmt.Errorf("%w: header must name alg EdDSA", ErrTokenMalformed)
	}
	if want := KeyID(pub); h.Kid != want {
		return nil, fmt.Errorf("%w: kid %q, want %q", ErrTokenKey, h.Kid, want)
	}
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, ErrTokenSignature
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenMalformed, err)
	}
	if now.Unix() >= c.Expires {
		return &c, ErrTokenExpired
	}
	return &c, nil
}
