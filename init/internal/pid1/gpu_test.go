package pid1

import (
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path"
	"reflect"
	"strings"
	"testing"

	"github.com/rigos/rigos/pkg/modsig/modsigtest"

	"github.com/rigos/rigos/pkg/bootconfig"
	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/modsig"
)

// The nvidia module's own PCI aliases: any NVIDIA display (0300) or 3D
// (0302) controller.
var nvidiaAliases = []string{"pci:v000010DEd*sv*sd*bc03sc00i00*", "pci:v000010DEd*sv*sd*bc03sc02i00*"}

func testGPU() *bootconfig.GPU {
	return &bootconfig.GPU{Version: "550.163.01", Modules: []bootconfig.Module{
		{Name: "nvidia", Path: "lib/modules/nvidia/nvidia.ko", Devices: nvidiaAliases, Wanted: true},
		{Name: "nvidia_uvm", Path: "lib/modules/nvidia/nvidia-uvm.ko", Deps: []string{"nvidia"}, Devices: nvidiaAliases, Wanted: true},
	}}
}

func TestGPUDriverOnlyForNVIDIAGPUs(t *testing.T) {
	g := testGPU()
	for _, c := range []struct {
		name    string
		aliases []string
		want    []string
	}{
		{"H100 (3D controller)", []string{"pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00"}, []string{"nvidia", "nvidia_uvm"}},
		{"RTX (VGA controller)", []string{"pci:v000010DEd00002684sv00001043sd000088E2bc03sc00i00"}, []string{"nvidia", "nvidia_uvm"}},
		{"NVIDIA audio function only", []string{"pci:v000010DEd000022BAsv00001043sd000088E2bc04sc03i00"}, nil},
		{"QEMU's virtio devices", []string{"pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"}, nil},
	} {
		var got []string
		for _, m := range modulePlan(g.Modules, c.aliases, map[string]bool{}) {
			got = append(got, m.Name)
		}
		if !reflect.DeepEqual(got, c.want) || hasNVIDIAGPU(c.aliases, g) != (c.want != nil) {
			t.Errorf("%s: plan %v (GPU %v), want %v", c.name, got, hasNVIDIAGPU(c.aliases, g), c.want)
		}
	}
}

func TestNvidiaDeviceNodes(t *testing.T) {
	info := func(minor string) []byte {
		return []byte("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 35\nDevice Minor: \t " + minor + "\nBus Location: \t 0000:18:00.0\n")
	}
	minors, err := nvidiaMinors([][]byte{info("3"), info("0")})
	if err != nil || !reflect.DeepEqual(minors, []int{0, 3}) {
		t.Fatalf("minors %v, %v", minors, err)
	}
	for _, bad := range [][]byte{info("255"), info("x"), []byte("Model: H100\n")} {
		if _, err := nvidiaMinors([][]byte{bad}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	devices := []byte("Character devices:\n  1 mem\n195 nvidia-frontend\n508 nvidia-uvm\n\nBlock devices:\n509 nvidia-uvm\n")
	major, err := charMajor(devices, "nvidia-uvm")
	if err != nil || major != 508 {
		t.Fatalf("nvidia-uvm major %d, %v", major, err)
	}
	if _, err := charMajor([]byte("Character devices:\n  1 mem\n"), "nvidia-uvm"); err == nil {
		t.Fatal("found a missing device")
	}
	got := nvidiaNodes(minors, major, true)
	want := []nvidiaNode{{"/dev/nvidiactl", 195, 255}, {"/dev/nvidia0", 195, 0}, {"/dev/nvidia3", 195, 3},
		{"/dev/nvidia-uvm", 508, 0}, {"/dev/nvidia-uvm-tools", 508, 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
}

// The self-check names the GPU modules present and signed with the
// image's key, and fails for a missing, unsigned or foreign-signed one.
func TestGPUModulesCheck(t *testing.T) {
	key, cert := modsigtest.Key(t, "RigOS db")
	otherKey, otherCert := modsigtest.Key(t, "someone else")
	sign := func(k *rsa.PrivateKey, c *x509.Certificate) []byte {
		b, err := modsig.Sign([]byte("\x7fELF module"), k, c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	g := testGPU()
	g.Signer = modsig.Signer{}.String()
	s, err := modsig.ReadSigner(sign(key, cert))
	if err != nil {
		t.Fatal(err)
	}
	g.Signer = s.String()
	files := func(nvidia, uvm []byte) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			switch p {
			case path.Join(layout.SystemMount, g.Modules[0].Path):
				if nvidia != nil {
					return nvidia, nil
				}
			case path.Join(layout.SystemMount, g.Modules[1].Path):
				if uvm != nil {
					return uvm, nil
				}
			}
			return nil, os.ErrNotExist
		}
	}
	good := sign(key, cert)
	for _, c := range []struct {
		name   string
		read   func(string) ([]byte, error)
		d      gpuDriver
		ok     bool
		substr string
	}{
		{"signed, no GPU", files(good, good), gpuDriver{}, true, "nvidia,nvidia_uvm_signed_by_module_key_not_loaded_no_NVIDIA_GPU"},
		{"signed, loaded", files(good, good), gpuDriver{attempted: true}, true, "_loaded"},
		{"load failed", files(good, good), gpuDriver{attempted: true, err: os.ErrInvalid}, false, "load_failed"},
		{"missing", files(good, nil), gpuDriver{}, false, "nvidia_uvm:missing"},
		{"unsigned", files(good, []byte("\x7fELF module")), gpuDriver{}, false, "nvidia_uvm:module_is_not_signed"},
		{"foreign key", files(sign(otherKey, otherCert), good), gpuDriver{}, false, "nvidia:signed_by_CN=someone_else"},
	} {
		got := GPUModulesCheck(g, c.d, c.read)
		if got.OK != c.ok || !strings.Contains(got.Got, c.substr) {
			t.Errorf("%s: %+v, want ok=%v and %q", c.name, got, c.ok, c.substr)
		}
	}
}
