package imager

import (
	"reflect"
	"testing"

	"github.com/rigos/rigos/pkg/bootconfig"
)

func TestGPULoadOrder(t *testing.T) {
	gpus := []string{"pci:v000010DEd*sv*sd*bc03sc02i00*"}
	mods := map[string]bootconfig.Module{
		"nvidia_uvm": {Name: "nvidia_uvm", Deps: []string{"nvidia"}, Wanted: true},
		"nvidia":     {Name: "nvidia", Deps: []string{"drm"}, Devices: gpus, Wanted: true},
		"drm":        {Name: "drm"},
	}
	order, err := gpuLoadOrder(mods, []bootconfig.Module{{Name: "drm"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range order {
		names = append(names, m.Name)
		if !reflect.DeepEqual(m.Devices, gpus) {
			t.Errorf("%s loads on %v, want the GPUs %v", m.Name, m.Devices, gpus)
		}
	}
	if !reflect.DeepEqual(names, []string{"nvidia", "nvidia_uvm"}) {
		t.Fatalf("order %v", names)
	}
	// A module that drives nothing and depends on nothing that does would
	// load on every rig, or never: refused.
	_, err = gpuLoadOrder(map[string]bootconfig.Module{"stray": {Name: "stray", Wanted: true}}, nil)
	if err == nil {
		t.Fatal("a module driving no device was accepted")
	}
	if _, err := gpuLoadOrder(map[string]bootconfig.Module{"a": {Name: "a", Deps: []string{"missing"}, Wanted: true}}, nil); err == nil {
		t.Fatal("a missing dependency was accepted")
	}
}
