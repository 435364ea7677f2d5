package blockdev

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// gptDisk returns a 1 MiB disk whose GPT has the given unique GUIDs, with
// valid checksums; mod may change the header before its CRC is set.
func gptDisk(ids []uuid.UUID, mod func(h []byte)) []byte {
	d := make([]byte, 1<<20)
	h := d[512:1024]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x00010000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], 128)
	binary.LittleEndian.PutUint32(h[84:], 128)
	entries := d[1024 : 1024+128*128]
	for i, id := range ids {
		e := entries[i*128:]
		copy(e, bytes.Repeat([]byte{0xaf}, 16)) // a type GUID
		g := id
		b := g[:]
		e[16], e[17], e[18], e[19] = b[3], b[2], b[1], b[0]
		e[20], e[21], e[22], e[23] = b[5], b[4], b[7], b[6]
		copy(e[24:32], b[8:16])
	}
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
	if mod != nil {
		mod(h)
	}
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	return d
}

func TestPartitionGUIDs(t *testing.T) {
	ids := []uuid.UUID{uuid.New(), uuid.New()}
	got, err := PartitionGUIDs(bytes.NewReader(gptDisk(ids, nil)), 1<<20)
	if err != nil || len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Fatalf("PartitionGUIDs = %v, %v; want %v", got, err, ids)
	}
	// An owner's disk crafted to make a parser allocate without bound,
	// or to point outside the disk, is refused before anything is read.
	for name, tc := range map[string]struct {
		mod  func(h []byte)
		want string
	}{
		"4 Gi entries":        {func(h []byte) { binary.LittleEndian.PutUint32(h[80:], 0xffffffff) }, "entries, more than"},
		"4 GiB entries":       {func(h []byte) { binary.LittleEndian.PutUint32(h[84:], 0xffffffff) }, "entries of"},
		"entries off the end": {func(h []byte) { binary.LittleEndian.PutUint64(h[72:], 1<<40) }, "outside the disk"},
		"header too big":      {func(h []byte) { binary.LittleEndian.PutUint32(h[12:], 4096) }, "header of"},
		"not GPT":             {func(h []byte) { copy(h, "NOT PART") }, "no GPT"},
	} {
		if _, err := PartitionGUIDs(bytes.NewReader(gptDisk(ids, tc.mod)), 1<<20); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
	bad := gptDisk(ids, nil)
	bad[1024+16] ^= 1 // an entry changed after the checksum
	if _, err := PartitionGUIDs(bytes.NewReader(bad), 1<<20); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("changed entry: %v", err)
	}
	bad = gptDisk(ids, nil)
	bad[512+72] ^= 1 // the header changed after its checksum
	if _, err := PartitionGUIDs(bytes.NewReader(bad), 1<<20); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("changed header: %v", err)
	}
}

func FuzzPartitionGUIDs(f *testing.F) {
	f.Add(gptDisk([]uuid.UUID{uuid.New()}, nil)[:64<<10])
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = PartitionGUIDs(bytes.NewReader(b), int64(len(b)))
	})
}
