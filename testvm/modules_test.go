package testvm

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/pkg/modsig/modsigtest"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/imager/cpio"
	"github.com/rigos/rigos/pkg/imager/sbkeys"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/modsig"
)

// The kernel under RigOS's command line loads a module signed with the
// image's db key (as the NVIDIA modules are) and refuses the same module
// signed with another key, or unsigned: what an owner who rebuilt or
// patched a module would have. The image carries the three copies of a
// small Debian module in its initramfs, listed for loading; init tries
// each, reports every refusal, and reboots.
func TestUntrustedModulesRefused(t *testing.T) {
	setup(t)
	keys, err := sbkeys.Load(env.keys)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := os.ReadDir(filepath.Join(env.kernel, "lib", "modules"))
	if err != nil || len(rel) != 1 {
		t.Fatalf("kernel modules: %v %v", rel, err)
	}
	// crc8: a library module with no side effects and nothing depending
	// on it in the image.
	orig, err := os.ReadFile(filepath.Join(env.kernel, "lib", "modules", rel[0].Name(), "kernel", "lib", "crc8.ko"))
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := modsig.Split(orig)
	if err != nil {
		t.Fatalf("Debian's crc8.ko: %v", err)
	}
	foreignKey, foreignCert := modsigtest.Key(t, "not RigOS")
	dbSigned, err := modsig.Sign(body, keys.DB.Signer, keys.DB.Cert)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := modsig.Sign(body, foreignKey, foreignCert)
	if err != nil {
		t.Fatal(err)
	}
	// Signature checks come before the kernel looks at the module's name,
	// so the copies are tried in this order and each gets its own verdict.
	copies := []struct {
		name string
		data []byte
	}{{"rigos_test_foreign", foreign}, {"rigos_test_unsigned", body}, {"rigos_test_db", dbSigned}}

	img, err := buildImage("untrusted-modules", env.keys, nil, func(initrd []byte) []byte {
		entries, err := cpio.Read(bytes.NewReader(initrd))
		if err != nil {
			panic(err)
		}
		cfgName := strings.TrimPrefix(layout.InitConfig, "/")
		var cfg bootconfig.Config
		for i, e := range entries {
			if e.Name != cfgName {
				continue
			}
			if err := json.Unmarshal(e.Data, &cfg); err != nil {
				panic(err)
			}
			for _, c := range copies {
				p := "rigos-test/" + c.name + ".ko"
				entries = append(entries, cpio.Entry{Name: strings.TrimPrefix(filepath.Join(layout.ModulesDir, p), "/"), Mode: cpio.TypeReg | 0o644, Data: c.data})
				cfg.Modules = append(cfg.Modules, bootconfig.Module{Name: c.name, Path: p, Wanted: true})
			}
			if entries[i].Data, err = json.Marshal(cfg); err != nil {
				panic(err)
			}
		}
		var out bytes.Buffer
		if err := cpio.Write(&out, entries); err != nil {
			panic(err)
		}
		return out.Bytes()
	})
	if err != nil {
		t.Fatal(err)
	}
	vm := boot(t, img, env.vars)
	if _, err := vm.WaitFor(bootDeadline, regexp.MustCompile(`rigos: fatal: `)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Done():
	case <-time.After(2 * time.Minute):
		t.Fatal("VM did not reboot after the refused modules")
	}
	console := vm.ConsoleText()
	for _, refused := range []string{"rigos_test_foreign", "rigos_test_unsigned"} {
		if !strings.Contains(console, "loading module "+refused+": refused by the kernel, not signed by a trusted key: key was rejected by service") {
			t.Errorf("no refusal of %s on the console:\n%s", refused, tail(console, 30))
		}
	}
	if strings.Contains(console, "loading module rigos_test_db") {
		t.Errorf("the db-signed copy was refused:\n%s", tail(console, 30))
	}
}
