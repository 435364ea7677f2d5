// Package attestation is the verifier's half of RigOS remote attestation.
// It is pure: it takes bytes (AK parameters, quotes, signatures, PCR
// values, event logs, nonces, signed manifests) and returns verdicts. It
// never talks to a TPM; the agent's half lives in package collect.
//
// Every failure is a *CheckError naming the check that failed, so that a
// demotion always carries its reason.
//
// Not guaranteed: firmware event data other than PCR 4, 7 and 11 events is
// not interpreted; firmware PCRs 0-3, 5 and 6 are only compared with the
// values pinned when the node first passed.
package attestation

import (
	"errors"
	"fmt"
)

// Check names one appraisal check. The names are stable: they are stored
// with verdicts and shown to operators.
type Check string

// The appraisal checks.
const (
	CheckEvidence     Check = "evidence"         // malformed or oversize evidence
	CheckAK           Check = "ak-attributes"    // AK unsuitable for attestation
	CheckEK           Check = "ek"               // EK or EK certificate unacceptable
	CheckActivation   Check = "activation"       // AK not bound to the EK
	CheckSignature    Check = "quote-signature"  // quote not signed by the pinned AK
	CheckNonce        Check = "nonce"            // stale, reused or foreign nonce
	CheckPCRSelection Check = "pcr-selection"    // quote covers other PCRs than asked
	CheckPCRDigest    Check = "pcr-digest"       // PCR values do not match the quote
	CheckClock        Check = "clock"            // TPM clock or counters rolled back
	CheckFirmwareLog  Check = "firmware-log"     // firmware event log does not replay
	CheckRuntimeLog   Check = "runtime-log"      // runtime event log does not replay
	CheckUnlogged     Check = "unlogged-pcr"     // PCR extended without a log entry
	CheckBootApp      Check = "boot-application" // unknown UKI digest in PCR 4
	CheckPCR11        Check = "pcr11"            // UKI sections not from a known build
	CheckSecureBoot   Check = "secure-boot"      // Secure Boot off, foreign key, debugger
	CheckEmptyPCR     Check = "empty-pcr"        // a PCR that must be empty is not
	CheckPhases       Check = "boot-phases"      // boot phase sequence wrong
	CheckFirmwarePins Check = "firmware-changed" // firmware PCRs differ from the pinned values
	CheckGPUPins      Check = "gpu-changed"      // GPU inventory differs from the pinned one
	CheckManifest     Check = "manifest"         // no active manifest
	CheckStateKey     Check = "state-key"        // state key handed over by a build not active
)

// CheckError is a failed check with its cause.
type CheckError struct {
	Check Check
	Err   error
}

func (e *CheckError) Error() string { return fmt.Sprintf("%s: %v", e.Check, e.Err) }
func (e *CheckError) Unwrap() error { return e.Err }

func fail(c Check, format string, args ...any) *CheckError {
	return &CheckError{Check: c, Err: fmt.Errorf(format, args...)}
}

// CheckOf returns the check named by err, or "" if err is not a CheckError.
func CheckOf(err error) Check {
	var ce *CheckError
	if errors.As(err, &ce) {
		return ce.Check
	}
	return ""
}
