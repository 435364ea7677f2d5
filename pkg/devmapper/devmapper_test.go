package devmapper

import (
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
