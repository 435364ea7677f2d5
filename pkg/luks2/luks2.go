// Package luks2 writes and opens LUKS2 volumes, in pure Go, in the
// subset RigOS uses: one aes-xts-plain64 segment, PBKDF2-SHA256 keyslots
// with the LUKS anti-forensic splitter, SHA-256 header checksums, and
// tokens. Volumes it writes open with cryptsetup, and it opens volumes
// cryptsetup formats with those choices; the tests check both ways.
//
// The on-disk format is the LUKS2 specification's: a 4 KiB binary header
// followed by the JSON metadata area, twice (primary and secondary), then
// the keyslot area, then the encrypted data.
package luks2

import (
	"bytes"
	"crypto/aes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/crypto/xts"
)

// Layout of the volumes Format writes.
const (
	HeaderSize   = 16 << 10 // binary header and JSON area, per copy
	binSize      = 4096
	KeyslotsOff  = 2 * HeaderSize
	DataOffset   = 1 << 20 // where the encrypted data starts
	Cipher       = "aes-xts-plain64"
	KeySize      = 64 // AES-256-XTS
	stripes      = 4000
	minIter      = 1000
	sectorSize   = 512
	keyslotBytes = KeySize * stripes
)

var (
	magicPrimary   = []byte("LUKS\xba\xbe")
	magicSecondary = []byte("SKUL\xba\xbe")
)

// ErrNotLUKS means the device has no LUKS2 header (blank, or another
// format).
var ErrNotLUKS = errors.New("no LUKS2 header")

// Token is a LUKS2 token: a JSON object with a "type" and the keyslots it
// opens; RigOS keeps its TPM-sealed passphrase in one.
type Token map[string]any

// Header is a parsed LUKS2 header.
type Header struct {
	UUID     string
	Seqid    uint64
	Metadata Metadata
}

// Metadata is the JSON area.
type Metadata struct {
	Keyslots map[string]Keyslot `json:"keyslots"`
	Tokens   map[string]Token   `json:"tokens"`
	Segments map[string]Segment `json:"segments"`
	Digests  map[string]Digest  `json:"digests"`
	Config   Config             `json:"config"`
}

type Keyslot struct {
	Type    string `json:"type"`
	KeySize int    `json:"key_size"`
	AF      struct {
		Type    string `json:"type"`
		Stripes int    `json:"stripes"`
		Hash    string `json:"hash"`
	} `json:"af"`
	Area struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Size       string `json:"size"`
		Encryption string `json:"encryption"`
		KeySize    int    `json:"key_size"`
	} `json:"area"`
	KDF struct {
		Type       string `json:"type"`
		Hash       string `json:"hash,omitempty"`
		Iterations int    `json:"iterations,omitempty"`
		Salt       string `json:"salt"`
	} `json:"kdf"`
}

type Segment struct {
	Type       string `json:"type"`
	Offset     string `json:"offset"`
	Size       string `json:"size"`
	IVTweak    string `json:"iv_tweak"`
	Encryption string `json:"encryption"`
	SectorSize int    `json:"sector_size"`
}

type Digest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int      `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

type Config struct {
	JSONSize     string `json:"json_size"`
	KeyslotsSize string `json:"keyslots_size"`
}

// Format returns the metadata region (both headers and the keyslot
// area, DataOffset bytes) of a new volume with volume key key, one
// keyslot opened by passphrase, and token as token 0 (it may be nil).
// Write it at the start of the device; the data follows at DataOffset.
func Format(key, passphrase []byte, token Token, uuid string) ([]byte, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("luks2: volume key of %d bytes, want %d", len(key), KeySize)
	}
	if len(passphrase) == 0 {
		return nil, errors.New("luks2: empty passphrase")
	}
	salt := func() []byte { b := make([]byte, 32); _, _ = rand.Read(b); return b }
	b64 := base64.StdEncoding.EncodeToString

	var ks Keyslot
	ks.Type, ks.KeySize = "luks2", KeySize
	ks.AF.Type, ks.AF.Stripes, ks.AF.Hash = "luks1", stripes, "sha256"
	areaSize := (keyslotBytes + 4095) / 4096 * 4096
	ks.Area.Type, ks.Area.Offset, ks.Area.Size = "raw", strconv.Itoa(KeyslotsOff), strconv.Itoa(areaSize)
	ks.Area.Encryption, ks.Area.KeySize = Cipher, KeySize
	ksSalt := salt()
	ks.KDF.Type, ks.KDF.Hash, ks.KDF.Iterations, ks.KDF.Salt = "pbkdf2", "sha256", minIter, b64(ksSalt)

	dSalt := salt()
	digest, err := pbkdf2.Key(sha256.New, string(key), dSalt, minIter, 32)
	if err != nil {
		return nil, err
	}
	m := Metadata{
		Keyslots: map[string]Keyslot{"0": ks},
		Tokens:   map[string]Token{},
		Segments: map[string]Segment{"0": {Type: "crypt", Offset: strconv.Itoa(DataOffset), Size: "dynamic", IVTweak: "0",
			Encryption: Cipher, SectorSize: sectorSize}},
		Digests: map[string]Digest{"0": {Type: "pbkdf2", Keyslots: []string{"0"}, Segments: []string{"0"}, Hash: "sha256",
			Iterations: minIter, Salt: b64(dSalt), Digest: b64(digest)}},
		Config: Config{JSONSize: strconv.Itoa(HeaderSize - binSize), KeyslotsSize: strconv.Itoa(DataOffset - KeyslotsOff)},
	}
	if token != nil {
		token["keyslots"] = []string{"0"}
		m.Tokens["0"] = token
	}
	out := make([]byte, DataOffset)
	for i, magic := range [][]byte{magicPrimary, magicSecondary} {
		hdr, err := encodeHeader(magic, uint64(i*HeaderSize), uuid, 1, &m)
		if err != nil {
			return nil, err
		}
		copy(out[i*HeaderSize:], hdr)
	}
	// The keyslot: the volume key split into stripes, encrypted with the
	// key PBKDF2 derives from the passphrase.
	split, err := afSplit(key, stripes)
	if err != nil {
		return nil, err
	}
	kek, err := pbkdf2.Key(sha256.New, string(passphrase), ksSalt, minIter, KeySize)
	if err != nil {
		return nil, err
	}
	area := make([]byte, areaSize)
	copy(area, split)
	if err := cryptSectors(kek, area, true); err != nil {
		return nil, err
	}
	copy(out[KeyslotsOff:], area)
	return out, nil
}

func encodeHeader(magic []byte, offset uint64, uuid string, seqid uint64, m *Metadata) ([]byte, error) {
	j, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(j) >= HeaderSize-binSize {
		return nil, fmt.Errorf("luks2: metadata of %d bytes does not fit", len(j))
	}
	h := make([]byte, HeaderSize)
	copy(h[0:], magic)
	binary.BigEndian.PutUint16(h[6:], 2)
	binary.BigEndian.PutUint64(h[8:], HeaderSize)
	binary.BigEndian.PutUint64(h[16:], seqid)
	copy(h[72:], "sha256")
	_, _ = rand.Read(h[104:168]) // salt
	copy(h[168:208], uuid)
	binary.BigEndian.PutUint64(h[256:], offset)
	copy(h[binSize:], j)
	sum := sha256.Sum256(h)
	copy(h[448:], sum[:])
	return h, nil
}

// WithTokens returns both header copies (2 × HeaderSize bytes) of the
// volume whose metadata region starts with meta, with its tokens
// replaced by tokens and its sequence ID one higher. Each token must
// name existing keyslots. Written over the device's first 2 × HeaderSize
// bytes it changes nothing else: keyslots and data stay. Write it
// primary first: a write cut short leaves one intact copy, old or new.
func WithTokens(meta []byte, tokens map[string]Token) ([]byte, error) {
	h, err := Parse(meta)
	if err != nil {
		return nil, err
	}
	m := h.Metadata
	m.Tokens = map[string]Token{}
	for id, t := range tokens {
		if _, err := strconv.ParseUint(id, 10, 8); err != nil {
			return nil, fmt.Errorf("luks2: token ID %q", id)
		}
		slots, ok := TokenKeyslots(t)
		if !ok || len(slots) == 0 {
			return nil, fmt.Errorf("luks2: token %s names no keyslots", id)
		}
		for _, s := range slots {
			if _, ok := m.Keyslots[s]; !ok {
				return nil, fmt.Errorf("luks2: token %s names keyslot %s, which does not exist", id, s)
			}
		}
		m.Tokens[id] = t
	}
	out := make([]byte, 2*HeaderSize)
	for i, magic := range [][]byte{magicPrimary, magicSecondary} {
		hdr, err := encodeHeader(magic, uint64(i*HeaderSize), h.UUID, h.Seqid+1, &m)
		if err != nil {
			return nil, err
		}
		copy(out[i*HeaderSize:], hdr)
	}
	return out, nil
}

// TokenKeyslots returns the keyslots a token names, whether it was made
// here ([]string) or read from a header ([]any of strings).
func TokenKeyslots(t Token) ([]string, bool) {
	switch v := t["keyslots"].(type) {
	case []string:
		return v, true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// Parse reads the header from the start of a device (at least
// 2 × HeaderSize bytes), using the secondary copy when the primary is
// damaged. It returns ErrNotLUKS when neither copy has a LUKS2 magic.
func Parse(b []byte) (*Header, error) {
	if len(b) < 2*HeaderSize {
		return nil, fmt.Errorf("luks2: read %d bytes, need %d", len(b), 2*HeaderSize)
	}
	var errs []error
	found := false
	for i, magic := range [][]byte{magicPrimary, magicSecondary} {
		h := b[i*HeaderSize : (i+1)*HeaderSize]
		if !bytes.HasPrefix(h, magic) {
			errs = append(errs, fmt.Errorf("copy %d: no magic", i))
			continue
		}
		found = true
		hdr, err := parseCopy(h, uint64(i*HeaderSize))
		if err == nil {
			return hdr, nil
		}
		errs = append(errs, fmt.Errorf("copy %d: %w", i, err))
	}
	if !found {
		return nil, ErrNotLUKS
	}
	return nil, fmt.Errorf("luks2: damaged header: %w", errors.Join(errs...))
}

func parseCopy(h []byte, offset uint64) (*Header, error) {
	if v := binary.BigEndian.Uint16(h[6:]); v != 2 {
		return nil, fmt.Errorf("version %d", v)
	}
	if size := binary.BigEndian.Uint64(h[8:]); size != HeaderSize {
		return nil, fmt.Errorf("header size %d (this reader handles %d)", size, HeaderSize)
	}
	if off := binary.BigEndian.Uint64(h[256:]); off != offset {
		return nil, fmt.Errorf("header says it is at %d, found at %d", off, offset)
	}
	if alg := string(bytes.TrimRight(h[72:104], "\x00")); alg != "sha256" {
		return nil, fmt.Errorf("checksum algorithm %q", alg)
	}
	c := bytes.Clone(h)
	clear(c[448:512])
	sum := sha256.Sum256(c)
	if subtle.ConstantTimeCompare(sum[:], h[448:480]) != 1 {
		return nil, errors.New("checksum mismatch")
	}
	j := bytes.TrimRight(h[binSize:], "\x00")
	var m Metadata
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return &Header{UUID: string(bytes.TrimRight(h[168:208], "\x00")), Seqid: binary.BigEndian.Uint64(h[16:]), Metadata: m}, nil
}

// Unlock recovers the volume key from keyslot slot of the device whose
// metadata region is area (at least DataOffset bytes) with passphrase.
func (h *Header) Unlock(area []byte, slot string, passphrase []byte) ([]byte, error) {
	ks, ok := h.Metadata.Keyslots[slot]
	if !ok {
		return nil, fmt.Errorf("luks2: no keyslot %s", slot)
	}
	if ks.Type != "luks2" || ks.KDF.Type != "pbkdf2" || ks.KDF.Hash != "sha256" || ks.AF.Type != "luks1" ||
		ks.AF.Hash != "sha256" || ks.Area.Type != "raw" || ks.Area.Encryption != Cipher || ks.KeySize != KeySize ||
		ks.Area.KeySize != KeySize {
		return nil, fmt.Errorf("luks2: keyslot %s uses parameters this reader does not handle", slot)
	}
	off, err1 := strconv.Atoi(ks.Area.Offset)
	size, err2 := strconv.Atoi(ks.Area.Size)
	need := ks.KeySize * ks.AF.Stripes
	if err1 != nil || err2 != nil || ks.AF.Stripes < 1 || ks.AF.Stripes > 1<<16 || size < need || size%sectorSize != 0 ||
		off < KeyslotsOff || off+size > len(area) || ks.KDF.Iterations < 1 || ks.KDF.Iterations > 1<<24 {
		return nil, fmt.Errorf("luks2: keyslot %s area or KDF out of range", slot)
	}
	salt, err := base64.StdEncoding.DecodeString(ks.KDF.Salt)
	if err != nil {
		return nil, fmt.Errorf("luks2: keyslot %s salt: %w", slot, err)
	}
	kek, err := pbkdf2.Key(sha256.New, string(passphrase), salt, ks.KDF.Iterations, ks.Area.KeySize)
	if err != nil {
		return nil, err
	}
	buf := bytes.Clone(area[off : off+size])
	if err := cryptSectors(kek, buf, false); err != nil {
		return nil, err
	}
	key, err := afMerge(buf[:need], ks.KeySize, ks.AF.Stripes)
	if err != nil {
		return nil, err
	}
	for _, d := range h.Metadata.Digests {
		if !contains(d.Keyslots, slot) {
			continue
		}
		if d.Type != "pbkdf2" || d.Hash != "sha256" || d.Iterations < 1 || d.Iterations > 1<<24 {
			return nil, errors.New("luks2: digest parameters this reader does not handle")
		}
		dsalt, err1 := base64.StdEncoding.DecodeString(d.Salt)
		want, err2 := base64.StdEncoding.DecodeString(d.Digest)
		if err1 != nil || err2 != nil {
			return nil, errors.New("luks2: digest encoding")
		}
		got, err := pbkdf2.Key(sha256.New, string(key), dsalt, d.Iterations, len(want))
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(got, want) != 1 {
			return nil, ErrWrongPassphrase
		}
		return key, nil
	}
	return nil, fmt.Errorf("luks2: no digest covers keyslot %s", slot)
}

// ErrWrongPassphrase means the keyslot did not yield the volume key.
var ErrWrongPassphrase = errors.New("luks2: wrong passphrase")

// Segment0 returns the data offset (bytes) and cipher of segment 0.
func (h *Header) Segment0() (int64, string, error) {
	s, ok := h.Metadata.Segments["0"]
	if !ok || s.Type != "crypt" || s.SectorSize != sectorSize || s.IVTweak != "0" {
		return 0, "", errors.New("luks2: segment 0 is not a plain crypt segment with 512-byte sectors")
	}
	off, err := strconv.ParseInt(s.Offset, 10, 64)
	if err != nil || off < KeyslotsOff || off%sectorSize != 0 {
		return 0, "", fmt.Errorf("luks2: segment offset %q", s.Offset)
	}
	return off, s.Encryption, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// cryptSectors en- or decrypts buf in place with aes-xts-plain64, 512-byte
// sectors numbered from 0.
func cryptSectors(key, buf []byte, encrypt bool) error {
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return err
	}
	for s := 0; s*sectorSize < len(buf); s++ {
		sec := buf[s*sectorSize : (s+1)*sectorSize]
		if encrypt {
			c.Encrypt(sec, sec, uint64(s))
		} else {
			c.Decrypt(sec, sec, uint64(s))
		}
	}
	return nil
}

// diffuse is the LUKS anti-forensic diffusion with SHA-256.
func diffuse(b []byte) {
	var iv [4]byte
	for i := 0; i*sha256.Size < len(b); i++ {
		blk := b[i*sha256.Size : min((i+1)*sha256.Size, len(b))]
		binary.BigEndian.PutUint32(iv[:], uint32(i))
		h := sha256.New()
		h.Write(iv[:])
		h.Write(blk)
		copy(blk, h.Sum(nil))
	}
}

func afSplit(key []byte, n int) ([]byte, error) {
	out := make([]byte, len(key)*n)
	buf := make([]byte, len(key))
	for i := 0; i < n-1; i++ {
		r := out[i*len(key) : (i+1)*len(key)]
		if _, err := rand.Read(r); err != nil {
			return nil, err
		}
		subtle.XORBytes(buf, buf, r)
		diffuse(buf)
	}
	subtle.XORBytes(out[(n-1)*len(key):], buf, key)
	return out, nil
}

func afMerge(split []byte, keySize, n int) ([]byte, error) {
	if len(split) != keySize*n {
		return nil, errors.New("luks2: split key size")
	}
	buf := make([]byte, keySize)
	for i := 0; i < n-1; i++ {
		subtle.XORBytes(buf, buf, split[i*keySize:(i+1)*keySize])
		diffuse(buf)
	}
	key := make([]byte, keySize)
	subtle.XORBytes(key, buf, split[(n-1)*keySize:])
	return key, nil
}
