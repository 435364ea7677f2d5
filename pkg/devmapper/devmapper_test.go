package devmapper

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestEncodeLayout(t *testing.T) {
	params := VerityParams("254:2", 10, make([]byte, 32), []byte{0xab})
	b, err := encode("rigos-system", flagReadOnly, []Target{{Start: 0, Length: 80, Type: "verity", Params: params}})
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[0:]); v != 4 {
		t.Errorf("version = %d, want 4", v)
	}
	if size, start := le.Uint32(b[12:]), le.Uint32(b[16:]); int(size) != len(b) || start != ioctlSize {
		t.Errorf("data_size %d (buffer %d), data_start %d", size, len(b), start)
	}
	if n, f := le.Uint32(b[20:]), le.Uint32(b[28:]); n != 1 || f != flagReadOnly {
		t.Errorf("target_count %d flags %d", n, f)
	}
	if name := strings.TrimRight(string(b[48:48+nameLen]), "\x00"); name != "rigos-system" {
		t.Errorf("name = %q", name)
	}
	spec := b[ioctlSize:]
	if l := le.Uint64(spec[8:]); l != 80 || strings.TrimRight(string(spec[24:40]), "\x00") != "verity" {
		t.Errorf("target spec = %x", spec[:40])
	}
	if got := string(spec[40 : 40+len(params)]); got != params || spec[40+len(params)] != 0 {
		t.Errorf("params = %q", got)
	}
	if !strings.HasPrefix(params, "1 254:2 254:2 4096 4096 10 10 sha256 ") || !strings.HasSuffix(params, " ab") {
		t.Errorf("VerityParams() = %q", params)
	}
	if _, err := encode("", 0, nil); err == nil {
		t.Error("encode(empty name) succeeded")
	}
}

// response builds a DM_TABLE_STATUS answer as the kernel writes it:
// each target's next is the offset of the following one from the start
// of the data.
func response(targets []Target) []byte {
	var data []byte
	for i, t := range targets {
		spec := make([]byte, targetSize)
		binary.LittleEndian.PutUint64(spec[0:], t.Start)
		binary.LittleEndian.PutUint64(spec[8:], t.Length)
		copy(spec[24:], t.Type)
		body := append([]byte(t.Params), 0)
		for (len(data)+targetSize+len(body))%8 != 0 {
			body = append(body, 0)
		}
		if i < len(targets)-1 {
			binary.LittleEndian.PutUint32(spec[20:], uint32(len(data)+targetSize+len(body)))
		}
		data = append(append(data, spec...), body...)
	}
	buf := make([]byte, ioctlSize, ioctlSize+len(data))
	binary.LittleEndian.PutUint32(buf[12:], uint32(ioctlSize+len(data)))
	binary.LittleEndian.PutUint32(buf[16:], ioctlSize)
	binary.LittleEndian.PutUint32(buf[20:], uint32(len(targets)))
	return append(buf, data...)
}

func TestDecodeTableAndCryptKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, 64)
	want := []Target{{Start: 0, Length: 2048, Type: "crypt", Params: CryptParams("aes-xts-plain64", key, "259:4", 2048)}}
	got, err := decodeTable(response(want))
	if err != nil || len(got) != 1 || got[0] != want[0] {
		t.Fatalf("decodeTable = %+v, %v", got, err)
	}
	if k, err := CryptKey(got); err != nil || !bytes.Equal(k, key) {
		t.Errorf("CryptKey = %x, %v", k, err)
	}
	two := append(want, Target{Start: 2048, Length: 8, Type: "linear", Params: "8:1 0"})
	if got, err := decodeTable(response(two)); err != nil || len(got) != 2 || got[1] != two[1] {
		t.Errorf("two targets: %+v, %v", got, err)
	}
	if _, err := CryptKey(two); err == nil {
		t.Error("CryptKey of two targets")
	}
	keyring := []Target{{Type: "crypt", Params: "aes-xts-plain64 :64:logon:cryptsetup:x 0 259:4 2048"}}
	if _, err := CryptKey(keyring); err == nil || !strings.Contains(err.Error(), "keyring") {
		t.Errorf("key in the keyring: %v", err)
	}
	full := response(want)
	binary.LittleEndian.PutUint32(full[28:], flagBufferFull)
	if _, err := decodeTable(full); err == nil {
		t.Error("a full buffer decoded")
	}
	short := response(want)
	binary.LittleEndian.PutUint32(short[20:], 3) // claims three targets
	if _, err := decodeTable(short); err == nil {
		t.Error("a target count past the data decoded")
	}
}

func FuzzDecodeTable(f *testing.F) {
	f.Add(response([]Target{{Type: "crypt", Params: "a b"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		_, _ = decodeTable(b)
	})
}
