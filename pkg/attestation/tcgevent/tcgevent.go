// Package tcgevent holds the event types of the TCG PC Client Platform
// Firmware Profile, as they appear in a firmware event log: the
// appraisal (package attestation) reads them, simulated boots write them.
package tcgevent

// Event types.
const (
	EvPrebootCert            uint32 = 0x00000000
	EvPostCode               uint32 = 0x00000001
	EvNoAction               uint32 = 0x00000003
	EvSeparator              uint32 = 0x00000004
	EvAction                 uint32 = 0x00000005
	EvEventTag               uint32 = 0x00000006
	EvSCRTMVersion           uint32 = 0x00000008
	EvIPL                    uint32 = 0x0000000d
	EvEFIVariableDriverCfg   uint32 = 0x80000001
	EvEFIVariableBoot        uint32 = 0x80000002
	EvEFIBootServicesApp     uint32 = 0x80000003
	EvEFIGPTEvent            uint32 = 0x80000006
	EvEFIAction              uint32 = 0x80000007
	EvEFIPlatformFirmwareBlb uint32 = 0x80000008
	EvEFIVariableBoot2       uint32 = 0x8000000c
	EvEFIVariableAuthority   uint32 = 0x800000e0
)
