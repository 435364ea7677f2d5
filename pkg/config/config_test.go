package config

import (
	"strings"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	var v struct {
		D Duration `json:"d"`
	}
	if err := Decode([]byte(`{"d": "1m30s"}`), &v); err != nil || v.D.D() != 90*time.Second {
		t.Fatalf("Decode() = %v, %v", v.D, err)
	}
	for _, bad := range []string{`{"d": 5}`, `{"d": "soon"}`, `{"e": "1s"}`, `{"d": "1s"} {}`, strings.Repeat(" ", MaxSize+1)} {
		if err := Decode([]byte(bad), &v); err == nil {
			t.Errorf("Decode(%.20q) succeeded", bad)
		}
	}
}
