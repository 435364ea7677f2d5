package pid1

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/rigos/rigos/pkg/layout"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/tpm"
)

// openRecorder opens the TPM and starts the runtime event log
// (layout.RuntimeLog) whose events it extends into the TPM.
func openRecorder() (*measure.Recorder, tpm.Device, error) {
	dev, err := tpm.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("opening TPM: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(layout.RuntimeLog), 0o755); err != nil {
		dev.Close()
		return nil, nil, err
	}
	var mu sync.Mutex
	rec, err := measure.NewRecorder(layout.RuntimeLog, func(pcr int, d []byte) error {
		mu.Lock()
		defer mu.Unlock()
		return tpm.Extend(dev, pcr, d)
	})
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	// The agent opens the TPM itself; init keeps it for its phases and
	// the state key.
	return rec, dev, nil
}
