// Package verity computes dm-verity hash trees (format version 1, the
// layout veritysetup writes with --no-superblock): the tree is appended
// to the data, and the root hash, which the kernel checks every read
// against, goes into the measured kernel command line.
package verity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// BlockSize is the data and hash block size.
const BlockSize = 4096

// Tree is a computed hash tree.
type Tree struct {
	// DataBlocks is the number of data blocks; the hash tree starts right
	// after them.
	DataBlocks uint64
	Salt       []byte
	Root       []byte
	// Hashes is the tree, top level first (veritysetup's on-disk order).
	Hashes []byte
}

// Build pads data to whole blocks (at least two: one block would need a
// tree of zero levels) and computes its hash tree.
func Build(data, salt []byte) (*Tree, []byte) {
	if r := len(data) % BlockSize; r != 0 {
		data = append(data, make([]byte, BlockSize-r)...)
	}
	if len(data) < 2*BlockSize {
		data = append(data, make([]byte, 2*BlockSize-len(data))...)
	}
	hashOf := func(block []byte) []byte {
		h := sha256.New()
		h.Write(salt)
		h.Write(block)
		return h.Sum(nil)
	}
	// Level 0 hashes the data; each level hashes the one below, until one
	// block remains. Every level is padded to whole blocks.
	var levels [][]byte
	cur := data
	for {
		var lvl bytes.Buffer
		for off := 0; off < len(cur); off += BlockSize {
			lvl.Write(hashOf(cur[off : off+BlockSize]))
		}
		b := lvl.Bytes()
		if r := len(b) % BlockSize; r != 0 {
			b = append(b, make([]byte, BlockSize-r)...)
		}
		levels = append(levels, b)
		if len(b) == BlockSize {
			break
		}
		cur = b
	}
	var tree bytes.Buffer
	for i := len(levels) - 1; i >= 0; i-- {
		tree.Write(levels[i])
	}
	return &Tree{
		DataBlocks: uint64(len(data) / BlockSize), Salt: salt,
		Root: hashOf(levels[len(levels)-1]), Hashes: tree.Bytes(),
	}, data
}

// Param is the kernel command-line value describing the tree:
// ROOT:SALT:DATABLOCKS in hex, hex, decimal.
func (t *Tree) Param() string {
	return fmt.Sprintf("%s:%s:%d", hex.EncodeToString(t.Root), hex.EncodeToString(t.Salt), t.DataBlocks)
}

// ParseParam reverses Param.
func ParseParam(s string) (root, salt []byte, blocks uint64, err error) {
	parts := bytes.Split([]byte(s), []byte(":"))
	if len(parts) != 3 {
		return nil, nil, 0, fmt.Errorf("verity parameter %q: want ROOT:SALT:BLOCKS", s)
	}
	if root, err = hex.DecodeString(string(parts[0])); err != nil || len(root) != sha256.Size {
		return nil, nil, 0, fmt.Errorf("verity root hash %q: want 64 hex digits", parts[0])
	}
	if salt, err = hex.DecodeString(string(parts[1])); err != nil || len(salt) > 256 {
		return nil, nil, 0, fmt.Errorf("verity salt %q: want hex", parts[1])
	}
	if _, err = fmt.Sscan(string(parts[2]), &blocks); err != nil || blocks == 0 {
		return nil, nil, 0, fmt.Errorf("verity block count %q: want a positive number", parts[2])
	}
	return root, salt, blocks, nil
}
