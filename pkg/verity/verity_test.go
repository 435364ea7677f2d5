package verity

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// veritysetup (cryptsetup) computes the same root hash and tree.
func TestMatchesVeritysetup(t *testing.T) {
	if _, err := exec.LookPath("veritysetup"); err != nil {
		t.Skip("veritysetup (cryptsetup-bin) not installed")
	}
	for _, size := range []int{1, BlockSize, 3*BlockSize + 17, 129 * BlockSize, 600 * BlockSize} {
		data := bytes.Repeat([]byte("rigos"), size/5+1)[:size]
		salt := []byte("0123456789abcdef0123456789abcdef")
		tree, padded := Build(data, salt)
		dir := t.TempDir()
		dp, hp := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
		os.WriteFile(dp, padded, 0o600)
		out, err := exec.Command("veritysetup", "format", "--no-superblock", "--salt", hex.EncodeToString(salt),
			"--data-block-size=4096", "--hash-block-size=4096", dp, hp).CombinedOutput()
		if err != nil {
			t.Fatalf("veritysetup: %v: %s", err, out)
		}
		m := regexp.MustCompile(`Root hash:\s+([0-9a-f]+)`).FindSubmatch(out)
		if m == nil || string(m[1]) != hex.EncodeToString(tree.Root) {
			t.Fatalf("size %d: veritysetup root %s, ours %x", size, m, tree.Root)
		}
		hb, _ := os.ReadFile(hp)
		if !bytes.Equal(hb, tree.Hashes) {
			t.Fatalf("size %d: hash tree differs from veritysetup's (%d vs %d bytes)", size, len(hb), len(tree.Hashes))
		}
	}
}

func TestParam(t *testing.T) {
	tree, _ := Build([]byte("x"), []byte{1, 2})
	root, salt, n, err := ParseParam(tree.Param())
	if err != nil || !bytes.Equal(root, tree.Root) || !bytes.Equal(salt, tree.Salt) || n != tree.DataBlocks || n != 2 {
		t.Fatalf("ParseParam(Param()) = %x %x %d %v", root, salt, n, err)
	}
	for _, bad := range []string{"", "ab:cd", "zz:00:1", hex.EncodeToString(tree.Root) + ":00:0"} {
		if _, _, _, err := ParseParam(bad); err == nil {
			t.Errorf("ParseParam(%q) succeeded", bad)
		}
	}
}

func FuzzParseParam(f *testing.F) {
	tree, _ := Build([]byte("x"), []byte{1})
	f.Add(tree.Param())
	f.Fuzz(func(t *testing.T, s string) { _, _, _, _ = ParseParam(s) })
}
