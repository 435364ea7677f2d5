package luks2

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const testUUID = "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11"

func newVolume(t *testing.T) (key, pass, meta []byte) {
	t.Helper()
	key, pass = make([]byte, KeySize), make([]byte, 64)
	rand.Read(key)
	rand.Read(pass)
	meta, err := Format(key, pass, Token{"type": "rigos-tpm2", "sealed": "abc"}, testUUID)
	if err != nil {
		t.Fatal(err)
	}
	return key, pass, meta
}

func TestRoundTrip(t *testing.T) {
	key, pass, meta := newVolume(t)
	h, err := Parse(meta)
	if err != nil {
		t.Fatal(err)
	}
	if h.UUID != testUUID || h.Metadata.Tokens["0"]["sealed"] != "abc" {
		t.Errorf("header %+v", h)
	}
	got, err := h.Unlock(meta, "0", pass)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Unlock = %x, %v", got, err)
	}
	if _, err := h.Unlock(meta, "0", []byte("wrong")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v", err)
	}
	off, cipher, err := h.Segment0()
	if err != nil || off != DataOffset || cipher != Cipher {
		t.Errorf("segment %d %s %v", off, cipher, err)
	}
	// The volume key is nowhere in the clear.
	if bytes.Contains(meta, key) || bytes.Contains(meta, pass) {
		t.Error("key material in the clear")
	}
}

func TestDamagedHeaders(t *testing.T) {
	_, pass, meta := newVolume(t)
	if _, err := Parse(make([]byte, 2*HeaderSize)); !errors.Is(err, ErrNotLUKS) {
		t.Errorf("zeros: %v", err)
	}
	primaryBad := bytes.Clone(meta)
	primaryBad[binSize+10] ^= 1 // inside the primary JSON
	h, err := Parse(primaryBad)
	if err != nil {
		t.Fatalf("primary damaged: %v, want the secondary copy", err)
	}
	if _, err := h.Unlock(primaryBad, "0", pass); err != nil {
		t.Errorf("unlock via the secondary header: %v", err)
	}
	bothBad := bytes.Clone(primaryBad)
	bothBad[HeaderSize+binSize+10] ^= 1
	if _, err := Parse(bothBad); err == nil || errors.Is(err, ErrNotLUKS) {
		t.Errorf("both damaged: %v", err)
	}
	slotBad := bytes.Clone(meta)
	slotBad[KeyslotsOff+100] ^= 1 // one keyslot byte: the AF merge spreads it over the key
	h, _ = Parse(slotBad)
	if _, err := h.Unlock(slotBad, "0", pass); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("damaged keyslot: %v", err)
	}
}

func cryptsetup(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("cryptsetup")
	if err != nil {
		t.Skip("cryptsetup not installed (hack/deps.sh installs cryptsetup-bin)")
	}
	return p
}

// A volume written here opens with cryptsetup, with the same key.
func TestCryptsetupOpensOurs(t *testing.T) {
	cs := cryptsetup(t)
	key, pass, meta := newVolume(t)
	dir := t.TempDir()
	img, keyFile := filepath.Join(dir, "vol.img"), filepath.Join(dir, "pass")
	if err := os.WriteFile(img, append(meta, make([]byte, 15<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pass, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cs, "luksDump", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Version:       \t2") && !strings.Contains(string(out), "Version:") {
		t.Fatalf("luksDump: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "rigos-tpm2") || !strings.Contains(string(out), testUUID) {
		t.Errorf("luksDump lacks our token or UUID:\n%s", out)
	}
	out, err = exec.Command(cs, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", keyFile, img).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup could not open our keyslot: %v\n%s", err, out)
	}
	if got := dumpedKey(t, string(out)); got != hex.EncodeToString(key) {
		t.Errorf("cryptsetup's volume key %s, ours %x", got, key)
	}
}

// A volume cryptsetup formats (with the parameters RigOS uses) opens here.
func TestWeOpenCryptsetups(t *testing.T) {
	cs := cryptsetup(t)
	dir := t.TempDir()
	img, keyFile := filepath.Join(dir, "vol.img"), filepath.Join(dir, "pass")
	if err := os.WriteFile(img, make([]byte, 20<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte("correct horse battery staple"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cs, "luksFormat", "--batch-mode", "--type", "luks2", "--cipher", Cipher, "--key-size", "512",
		"--hash", "sha256", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", keyFile, img).CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
	out, err := exec.Command(cs, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", keyFile, img).CombinedOutput()
	if err != nil {
		t.Fatalf("luksDump: %v\n%s", err, out)
	}
	want := dumpedKey(t, string(out))
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	key, err := h.Unlock(b, "0", []byte("correct horse battery staple"))
	if err != nil || hex.EncodeToString(key) != want {
		t.Fatalf("Unlock = %x, %v; cryptsetup says %s", key, err, want)
	}
}

var mkDump = regexp.MustCompile(`(?s)MK dump:\s*(.*?)\n\S`)

func dumpedKey(t *testing.T, out string) string {
	t.Helper()
	m := mkDump.FindStringSubmatch(out + "\nX")
	if m == nil {
		t.Fatalf("no volume key in:\n%s", out)
	}
	return strings.NewReplacer(" ", "", "\n", "", "\t", "").Replace(m[1])
}

func FuzzParse(f *testing.F) {
	_, _, meta := func() ([]byte, []byte, []byte) {
		key, pass := make([]byte, KeySize), []byte("p")
		m, _ := Format(key, pass, nil, testUUID)
		return key, pass, m
	}()
	f.Add(meta[:HeaderSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		buf := make([]byte, DataOffset)
		copy(buf, b)
		h, err := Parse(buf)
		if err != nil {
			return
		}
		if ks, ok := h.Metadata.Keyslots["0"]; ok && ks.KDF.Iterations <= 10000 {
			_, _ = h.Unlock(buf, "0", []byte("p")) // bounded: a fuzzed KDF cost would only slow the fuzzer
		}
		_, _, _ = h.Segment0()
	})
}

// Tokens are replaced in both header copies, the sequence ID rises, and
// the keyslot and data stay: the volume opens as before, here and with
// cryptsetup. A token naming a keyslot that does not exist is refused.
func TestWithTokens(t *testing.T) {
	key, pass, meta := newVolume(t)
	h0, _ := Parse(meta)
	tokens := map[string]Token{}
	for id, tok := range h0.Metadata.Tokens {
		tokens[id] = tok // read back from JSON: keyslots is []any
	}
	tokens["1"] = Token{"type": "rigos-tpm2", "sealed": "for the next build", "keyslots": []string{"0"}}
	hdrs, err := WithTokens(meta, tokens)
	if err != nil {
		t.Fatal(err)
	}
	if len(hdrs) != 2*HeaderSize {
		t.Fatalf("WithTokens returned %d bytes, want both copies", len(hdrs))
	}
	next := append(bytes.Clone(hdrs), meta[2*HeaderSize:]...)
	for i := range 2 { // each copy alone
		only := bytes.Clone(next)
		clear(only[(1-i)*HeaderSize : (2-i)*HeaderSize])
		h, err := Parse(only)
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
		if h.Seqid != h0.Seqid+1 || len(h.Metadata.Tokens) != 2 || h.Metadata.Tokens["1"]["sealed"] != "for the next build" || h.UUID != h0.UUID {
			t.Errorf("copy %d: seqid %d, tokens %v", i, h.Seqid, h.Metadata.Tokens)
		}
		if got, err := h.Unlock(only, "0", pass); err != nil || !bytes.Equal(got, key) {
			t.Errorf("copy %d: Unlock = %v", i, err)
		}
	}
	if _, err := WithTokens(meta, map[string]Token{"0": {"type": "x", "keyslots": []string{"3"}}}); err == nil || !strings.Contains(err.Error(), "keyslot 3") {
		t.Errorf("a token naming keyslot 3: %v", err)
	}
	if _, err := WithTokens(meta, map[string]Token{"x": {"type": "x", "keyslots": []string{"0"}}}); err == nil {
		t.Error("token ID x accepted")
	}
	if cs, err := exec.LookPath("cryptsetup"); err == nil {
		img := filepath.Join(t.TempDir(), "vol.img")
		if err := os.WriteFile(img, append(next, make([]byte, 15<<20)...), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(cs, "luksDump", img).CombinedOutput()
		if err != nil || strings.Count(string(out), "rigos-tpm2") != 2 {
			t.Errorf("cryptsetup luksDump of the rewritten header: %v\n%s", err, out)
		}
	}
}
