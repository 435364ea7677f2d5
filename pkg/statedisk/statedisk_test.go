package statedisk

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rigos/rigos/pkg/tpm"
)

func sample() *Header {
	return New(&tpm.Sealed{PCRs: []int{7, 15}, Policy: []byte{1}, Public: []byte{2, 3}, Private: []byte{4, 5}, SRKName: []byte{6}})
}

func TestRoundTrip(t *testing.T) {
	b, err := sample().Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != Slots*SlotSize {
		t.Fatalf("encoded %d bytes", len(b))
	}
	h, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Key.Private, []byte{4, 5}) || h.Cipher != Cipher {
		t.Fatalf("decoded %+v", h)
	}
}

func TestDecodeBlankAndDamaged(t *testing.T) {
	good, _ := sample().Encode()
	if _, err := Decode(make([]byte, Slots*SlotSize)); !errors.Is(err, ErrBlank) {
		t.Errorf("zeros: %v, want ErrBlank", err)
	}
	if _, err := Decode(good[:SlotSize]); err == nil || errors.Is(err, ErrBlank) {
		t.Errorf("short read: %v", err)
	}
	// One damaged slot: the other copy is used.
	oneBad := bytes.Clone(good)
	oneBad[20] ^= 1
	if _, err := Decode(oneBad); err != nil {
		t.Errorf("first slot damaged: %v, want the second copy", err)
	}
	// Both damaged: never blank, so never formatted over.
	bothBad := bytes.Clone(oneBad)
	bothBad[SlotSize+20] ^= 1
	if _, err := Decode(bothBad); !errors.Is(err, ErrDamaged) {
		t.Errorf("both slots damaged: %v, want ErrDamaged", err)
	}
	// Half-written: magic only in the first slot, rest zero.
	half := make([]byte, Slots*SlotSize)
	copy(half, good[:len(Magic)+10])
	if _, err := Decode(half); !errors.Is(err, ErrDamaged) {
		t.Errorf("half-written header: %v, want ErrDamaged", err)
	}
	// A header naming another cipher is refused, not guessed at.
	h := sample()
	h.Cipher = "cipher_null"
	if _, err := h.Encode(); err == nil {
		t.Error("encoded a header with cipher_null")
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := sample().Encode()
	f.Add(good[:SlotSize])
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, slot []byte) {
		b := make([]byte, Slots*SlotSize)
		copy(b, slot)
		h, err := Decode(b)
		if err != nil {
			return
		}
		if _, err := h.Encode(); err != nil {
			t.Fatalf("decoded a header that does not encode: %v", err)
		}
	})
}
