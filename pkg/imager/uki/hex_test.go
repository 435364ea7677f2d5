package uki

import "encoding/hex"

func fmtHex(b []byte) string { return hex.EncodeToString(b) }
