package statedisk

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/rigos/rigos/pkg/luks2"
	"github.com/rigos/rigos/pkg/tpm"
)

func sealed() *tpm.Sealed {
	return &tpm.Sealed{PCRs: []int{7, 15}, Policy: []byte{1}, Public: []byte{2, 3}, Private: []byte{4, 5}, SRKName: []byte{6}}
}

func TestRoundTrip(t *testing.T) {
	key, pass := make([]byte, luks2.KeySize), make([]byte, 64)
	rand.Read(key)
	rand.Read(pass)
	meta, err := New(key, pass, sealed(), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	if err != nil {
		t.Fatal(err)
	}
	v, err := Read(meta)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Sealed.Private, []byte{4, 5}) || v.Keyslot != "0" || v.DataOffset != MetadataSize {
		t.Fatalf("read %+v", v)
	}
	got, err := v.Unlock(meta, pass)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Unlock = %x, %v", got, err)
	}
}

func TestReadRejects(t *testing.T) {
	if _, err := Read(make([]byte, MetadataSize)); !errors.Is(err, ErrBlank) {
		t.Errorf("zeros: %v, want ErrBlank", err)
	}
	key := make([]byte, luks2.KeySize)
	// A LUKS2 volume without our token (formatted by someone else) is
	// not blank and not ours: never formatted over.
	plain, err := luks2.Format(key, []byte("p"), nil, "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(plain); err == nil || errors.Is(err, ErrBlank) {
		t.Errorf("volume without the token: %v", err)
	}
	// A token with a PCR out of range or a missing blob.
	bad, err := luks2.Format(key, []byte("p"), luks2.Token{"type": TokenType, "pcrs": []int{7, 99}, "public": "AA=="}, "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bad); err == nil {
		t.Error("a malformed token was accepted")
	}
	// Both header copies damaged: an error, not blank.
	good, _ := New(key, []byte("p"), sealed(), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	good[5000] ^= 1
	good[luks2.HeaderSize+5000] ^= 1
	if _, err := Read(good); err == nil || errors.Is(err, ErrBlank) {
		t.Errorf("damaged headers: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	meta, _ := New(make([]byte, luks2.KeySize), []byte("p"), sealed(), "6f0b9d6e-2c57-4c1e-9a39-1f4f3c0a7d11")
	f.Add(meta[:luks2.HeaderSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		buf := make([]byte, MetadataSize)
		copy(buf, b)
		v, err := Read(buf)
		if err == nil && (v.Sealed == nil || v.Keyslot == "") {
			t.Fatal("read a volume without its sealed passphrase")
		}
	})
}
