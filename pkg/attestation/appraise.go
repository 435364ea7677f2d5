package attestation

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf16"

	"github.com/google/go-attestation/attest"

	"github.com/rigos/rigos/pkg/attestation/tcgevent"
	"github.com/rigos/rigos/pkg/measure"
)

// Evidence is what an agent returns for one challenge. All of it is
// untrusted until Appraise has checked it.
type Evidence struct {
	Quote       []byte         // TPMS_ATTEST
	Signature   []byte         // TPMT_SIGNATURE
	PCRs        map[int][]byte // claimed SHA-256 PCR values
	FirmwareLog []byte         // TCG PC Client event log
	RuntimeLog  []byte         // RigOS runtime log (package measure)
}

// Evidence size limits. Real firmware logs are 8-64 KiB.
const (
	MaxFirmwareLog = 1 << 20
	MaxRuntimeLog  = measure.MaxLogBytes
)

// FirmwarePCRs depend on the motherboard and its firmware settings; they
// are pinned per node when it first passes.
var FirmwarePCRs = []int{0, 1, 2, 3, 5, 6}

// DefaultPCRs are the PCRs a challenge asks for by default: everything
// but PCR 10 (IMA, not appraised) and the resettable PCRs 16-23.
var DefaultPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15}

// Request is one appraisal.
type Request struct {
	AKPublic []byte // the node's pinned AK (TPMT_PUBLIC)
	Nonce    []byte // the challenge's nonce
	PCRs     []int  // the PCRs the challenge asked for
	Evidence Evidence
	// LastClock is the clock of the node's last accepted quote, nil if
	// none.
	LastClock *Clock
	// PinnedFirmware holds the firmware PCR values pinned for this node;
	// nil when none are pinned yet.
	PinnedFirmware map[int][]byte
	// Manifests are the active reference manifests.
	Manifests []*Manifest
	// Retired are manifests of builds no longer accepted: evidence one of
	// them accepts fails naming the build and why (RetiredWhy, by build).
	Retired    []*Manifest
	RetiredWhy map[string]string
	// Checkpoints are the runtime-log checkpoints (measure.Checkpoint
	// data) this verifier issued to the node: a runtime log may start
	// with one of them, for the boot it names, instead of the records it
	// stands for.
	Checkpoints [][]byte
}

// Result is the outcome of an appraisal.
type Result struct {
	// Quote is the verified quote, nil if the quote did not verify.
	Quote    *Quote
	Rebooted bool
	// Failures lists every failed check; empty means the node passed.
	Failures []*CheckError
	// Manifest is the build of the manifest that accepted the evidence.
	Manifest string
	// FirmwarePCRs are the observed firmware pins (to pin on first
	// pass): the PCR values, less BootPathEvents for PCRs 1 and 5.
	FirmwarePCRs map[int][]byte
	// LegacyPins is set when a pin matched only the raw PCR value (pinned
	// by a verifier that did not leave boot paths out): the caller should
	// store FirmwarePCRs in its place.
	LegacyPins bool
	// BootApplications are the PCR 4 application digests seen.
	BootApplications [][]byte
	// RuntimeEvents are the replayed runtime events (after the
	// checkpoint, when the log starts with one).
	RuntimeEvents []measure.Event
	// RuntimeBase is the checkpoint the runtime log started with, nil if
	// none.
	RuntimeBase *measure.Checkpoint
}

// Err returns nil if the evidence passed, or the failures joined.
func (r *Result) Err() error {
	if len(r.Failures) == 0 {
		return nil
	}
	errs := make([]error, len(r.Failures))
	for i, f := range r.Failures {
		errs[i] = f
	}
	return errors.Join(errs...)
}

// Reason is a one-line summary of the failures (up to three, then a
// count), or "" if it passed.
func (r *Result) Reason() string {
	var parts []string
	for i, f := range r.Failures {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(r.Failures)-3))
			break
		}
		parts = append(parts, f.Error())
	}
	return strings.Join(parts, "; ")
}

func (r *Result) add(err error) {
	if err == nil {
		return
	}
	var ce *CheckError
	if !errors.As(err, &ce) {
		ce = &CheckError{Check: CheckEvidence, Err: err}
	}
	r.Failures = append(r.Failures, ce)
}

// Appraise checks one piece of evidence. It never talks to a TPM.
func Appraise(req Request) *Result {
	r := &Result{}
	ev := req.Evidence
	if len(ev.FirmwareLog) > MaxFirmwareLog {
		r.add(fail(CheckEvidence, "firmware log of %d bytes exceeds %d", len(ev.FirmwareLog), MaxFirmwareLog))
	}
	if len(ev.RuntimeLog) > MaxRuntimeLog {
		r.add(fail(CheckEvidence, "runtime log of %d bytes exceeds %d", len(ev.RuntimeLog), MaxRuntimeLog))
	}
	if len(r.Failures) > 0 {
		return r
	}
	q, err := VerifyQuote(req.AKPublic, ev.Quote, ev.Signature, ev.PCRs, req.Nonce, req.PCRs)
	if err != nil {
		r.add(err)
		return r // nothing else can be believed
	}
	r.Quote = q
	r.Rebooted, err = VerifyClock(req.LastClock, q.Clock)
	r.add(err)

	fwEvents, logged, err := replayFirmware(ev.FirmwareLog, q.PCRs)
	r.add(err)
	r.RuntimeBase, r.RuntimeEvents, err = replayRuntime(ev.RuntimeLog, q.PCRs, req.Checkpoints, q.Clock.ResetCount)
	r.add(err)
	// Always, whatever the replays said: a PCR extended without a log
	// entry is caught even when a log is empty or fails to parse.
	r.add(checkUnlogged(q.PCRs, logged))

	r.FirmwarePCRs = map[int][]byte{}
	for _, i := range FirmwarePCRs {
		if v, ok := q.PCRs[i]; ok {
			r.FirmwarePCRs[i] = firmwarePin(i, v, fwEvents)
		}
	}
	if req.PinnedFirmware != nil {
		var changed []int
		for i, v := range r.FirmwarePCRs {
			switch {
			case bytes.Equal(req.PinnedFirmware[i], v):
			case bytes.Equal(req.PinnedFirmware[i], q.PCRs[i]):
				r.LegacyPins = true // pinned as the raw PCR value, before boot paths were left out
			default:
				changed = append(changed, i)
			}
		}
		if len(changed) > 0 {
			slices.Sort(changed)
			r.add(fail(CheckFirmwarePins, "firmware PCRs %v differ from the values pinned at enrolment", changed))
		}
	}

	// The policy always runs: with a firmware log that failed to replay
	// it sees no events and fails on its own terms as well.
	for _, e := range fwEvents {
		if e.Index == 4 && uint32(e.Type) == tcgevent.EvEFIBootServicesApp {
			r.BootApplications = append(r.BootApplications, e.Digest)
		}
	}
	r.Manifest = r.applyPolicy(req.Manifests, fwEvents, q.PCRs, r.RuntimeBase != nil)
	if r.Manifest != "" {
		r.checkStateKey(req.Manifests)
	}
	if r.Manifest == "" {
		for _, m := range req.Retired {
			if len(checkManifest(m, fwEvents, q.PCRs, r.RuntimeEvents, r.RuntimeBase != nil)) == 0 {
				r.add(fail(CheckManifest, "%s", req.RetiredWhy[m.Build]))
				break
			}
		}
	}
	return r
}

// checkStateKey fails a boot that opened its state with a key another
// build sealed for it (an update's handover, measured by init) unless
// that build is one of the active manifests': a retired build, or any
// other code running under the same Secure Boot keys, could otherwise
// hand the node a state its owner prepared.
func (r *Result) checkStateKey(manifests []*Manifest) {
	creators, err := measure.StateKeyCreators(r.RuntimeEvents)
	if err != nil {
		r.add(fail(CheckStateKey, "%v", err))
		return
	}
	for _, c := range creators {
		if !slices.ContainsFunc(manifests, func(m *Manifest) bool { return slices.Contains(m.PCR11, c) }) {
			r.add(fail(CheckStateKey, "the state was handed over by a build with PCR 11 %s…, which is no active build", c[:12]))
		}
	}
}

// BootPathEvents are the events in the firmware PCRs that describe where
// the firmware looks for what to boot, not the firmware: the boot
// variables (BootOrder, BootNext, Boot####) in PCR 1 and the boot disk's
// GPT in PCR 5. Installing to a disk, an A/B update's BootNext, or a USB
// stick plugged in or out change them on the same motherboard. They are
// left out of the firmware pins (firmwarePin): what the firmware then
// boots is measured in PCR 4 and appraised against the manifests, and
// the system partition is checked by dm-verity against the root hash on
// the measured command line, so a boot path gains an owner nothing. An
// event is left out only if it is what its type says (bootPathEvent).
var BootPathEvents = map[int][]uint32{
	1: {tcgevent.EvEFIVariableBoot, tcgevent.EvEFIVariableBoot2},
	5: {tcgevent.EvEFIGPTEvent},
}

// firmwarePin is the value pinned for firmware PCR i, quoted as v: v
// itself, or for a PCR with BootPathEvents, the replay from zero of its
// other events (the log replayed to v, so its events are v's). Without
// replayed events it is v.
func firmwarePin(i int, v []byte, events []attest.Event) []byte {
	skip, ok := BootPathEvents[i]
	if !ok || len(events) == 0 {
		return v
	}
	pin := make([]byte, sha256.Size)
	for _, e := range events {
		if e.Index != i || (slices.Contains(skip, uint32(e.Type)) && bootPathEvent(e)) {
			continue
		}
		h := sha256.New()
		h.Write(pin)
		h.Write(e.Digest)
		pin = h.Sum(nil)
	}
	return pin
}

// efiGlobalVariable is EFI_GLOBAL_VARIABLE in EFI's byte order.
var efiGlobalVariable = []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}

// bootVarName matches the boot variables left out of the pins.
var bootVarName = regexp.MustCompile(`^(BootOrder|BootNext|Boot[0-9A-F]{4})$`)

// bootPathEvent reports whether e, of a BootPathEvents type, is what
// its type says: an event's type is not measured, so a log could label
// any event a boot path to hide it from the pins. It must be bound to
// what was measured: a GPT event's digest is its data's SHA-256; a boot
// variable event's data is a UEFI_VARIABLE_DATA for an EFI global
// BootOrder, BootNext or Boot#### variable, and its digest the SHA-256
// of that structure or (as EDK2 measures EV_EFI_VARIABLE_BOOT) of the
// variable's data alone. Anything else stays pinned.
func bootPathEvent(e attest.Event) bool {
	if uint32(e.Type) == tcgevent.EvEFIGPTEvent {
		sum := sha256.Sum256(e.Data)
		return bytes.Equal(e.Digest, sum[:])
	}
	d := e.Data
	if len(d) < 32 || !bytes.Equal(d[:16], efiGlobalVariable) {
		return false
	}
	nameLen, dataLen := binary.LittleEndian.Uint64(d[16:]), binary.LittleEndian.Uint64(d[24:])
	if nameLen > 16 || dataLen > uint64(len(d)) || uint64(len(d)) != 32+2*nameLen+dataLen {
		return false
	}
	name := make([]uint16, nameLen)
	for k := range name {
		name[k] = binary.LittleEndian.Uint16(d[32+2*k:])
	}
	if !bootVarName.MatchString(string(utf16.Decode(name))) {
		return false
	}
	whole, value := sha256.Sum256(d), sha256.Sum256(d[32+2*nameLen:])
	return bytes.Equal(e.Digest, whole[:]) || bytes.Equal(e.Digest, value[:])
}

// LoggedPCRs must be quoted and must have firmware log events: the
// policy reads them (Secure Boot state and authorities in PCR 7, boot
// applications in PCR 4, the UKI's sections in PCR 11, the firmware in
// 0-3, 5, 6). A log without events for one of them proves nothing about
// it, and an empty log must not pass as "nothing to check".
var LoggedPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 11}

// MaxNoActionEvents bounds the EV_NO_ACTION events a firmware log may
// carry; real firmware logs a handful.
const MaxNoActionEvents = 8

// noActionSignatures are the EV_NO_ACTION events the TCG PC Client
// specification defines (beyond the Spec ID header, which the parser
// consumes). They extend nothing and the appraisal never reads them, but
// any other EV_NO_ACTION is padding or a smuggled record and fails.
var noActionSignatures = []string{
	"StartupLocality\x00",
	"SP800-155 Event\x00",
	"SP800-155 Event3",
	"NvIndexInstance\x00",
	"NvIndexDynamic\x00\x00",
}

// replayFirmware parses the firmware log and replays it against the
// quoted PCRs. It returns the verified events and the set of PCRs that
// have events. Only the SHA-256 bank is replayed and read: the log's
// SHA-1 digests are neither checked nor used (no SHA-1 PCR is quoted).
// Every event must be for a quoted PCR, and every PCR in LoggedPCRs must
// have events.
func replayFirmware(log []byte, quoted map[int][]byte) ([]attest.Event, map[int]bool, error) {
	logged := map[int]bool{}
	el, err := attest.ParseEventLog(log)
	if err != nil {
		return nil, logged, fail(CheckFirmwareLog, "parsing: %v", err)
	}
	if !slices.Contains(el.Algs, attest.HashSHA256) {
		return nil, logged, fail(CheckFirmwareLog, "log has no SHA-256 bank")
	}
	noAction := 0
	var unquoted []int
	for seq, e := range el.Events(attest.HashSHA256) {
		if uint32(e.Type) == tcgevent.EvNoAction { // extends nothing
			noAction++
			if noAction > MaxNoActionEvents {
				return nil, map[int]bool{}, fail(CheckFirmwareLog, "more than %d EV_NO_ACTION events", MaxNoActionEvents)
			}
			if len(e.Data) < 16 || !slices.Contains(noActionSignatures, string(e.Data[:16])) {
				return nil, map[int]bool{}, fail(CheckFirmwareLog, "EV_NO_ACTION event %d is not one the specification defines", seq)
			}
			continue
		}
		if e.Index == measure.RuntimePCR {
			return nil, map[int]bool{}, fail(CheckFirmwareLog, "firmware log has events for the runtime PCR %d", measure.RuntimePCR)
		}
		if _, ok := quoted[e.Index]; !ok {
			if !slices.Contains(unquoted, e.Index) {
				unquoted = append(unquoted, e.Index)
			}
			continue
		}
		logged[e.Index] = true
	}
	if len(unquoted) > 0 {
		slices.Sort(unquoted)
		return nil, logged, fail(CheckFirmwareLog, "events for PCRs %v, which the challenge did not quote", unquoted)
	}
	var missing []int
	for _, i := range LoggedPCRs {
		if !logged[i] {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return nil, logged, fail(CheckFirmwareLog, "no events for PCRs %v, which the policy needs", missing)
	}
	var pcrs []attest.PCR
	for i, v := range quoted {
		if logged[i] {
			pcrs = append(pcrs, attest.PCR{Index: i, Digest: v, DigestAlg: crypto.SHA256})
		}
	}
	events, err := el.Verify(pcrs)
	if err != nil {
		var re attest.ReplayError
		if errors.As(err, &re) {
			return nil, logged, fail(CheckFirmwareLog, "PCRs %v do not match the log", re.InvalidPCRs)
		}
		return nil, logged, fail(CheckFirmwareLog, "replay: %v", err)
	}
	return events, logged, nil
}

func replayRuntime(log []byte, quoted map[int][]byte, checkpoints [][]byte, boot uint32) (*measure.Checkpoint, []measure.Event, error) {
	events, err := measure.Parse(log)
	if err != nil {
		return nil, nil, &CheckError{Check: CheckRuntimeLog, Err: err}
	}
	base, rest, err := measure.Base(events)
	if err != nil {
		return nil, nil, &CheckError{Check: CheckRuntimeLog, Err: err}
	}
	if base != nil {
		if !slices.ContainsFunc(checkpoints, func(c []byte) bool { return bytes.Equal(c, events[0].Data) }) {
			return nil, nil, fail(CheckRuntimeLog, "the log starts with a checkpoint this verifier did not issue to this node")
		}
		if base.Boot != boot {
			return nil, nil, fail(CheckRuntimeLog, "the log starts with a checkpoint of another boot (resetCount %d, now %d)", base.Boot, boot)
		}
	}
	v, ok := quoted[measure.RuntimePCR]
	if !ok {
		if len(events) > 0 {
			return nil, nil, fail(CheckRuntimeLog, "runtime events present but PCR %d was not quoted", measure.RuntimePCR)
		}
		return nil, nil, nil
	}
	if !bytes.Equal(measure.Replay(events), v) {
		return nil, nil, fail(CheckRuntimeLog, "PCR %d does not match the %d runtime events", measure.RuntimePCR, len(events))
	}
	return base, rest, nil
}

// checkUnlogged demands that every quoted PCR without log events (the
// runtime PCR is accounted for by the runtime log) is all zeros: a PCR
// extended without a log entry would otherwise pass a replay.
func checkUnlogged(quoted map[int][]byte, logged map[int]bool) error {
	var bad []int
	for i, v := range quoted {
		if logged[i] || i == measure.RuntimePCR {
			continue
		}
		if !isZero(v) {
			bad = append(bad, i)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fail(CheckUnlogged, "PCRs %v were extended without a log entry", bad)
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// applyPolicy checks the evidence against each manifest. The first that
// accepts it wins; otherwise the failures of the closest one are kept.
func (r *Result) applyPolicy(manifests []*Manifest, events []attest.Event, pcrs map[int][]byte, checkpointed bool) string {
	if len(manifests) == 0 {
		r.add(fail(CheckManifest, "no active reference manifest"))
		return ""
	}
	var best []*CheckError
	for _, m := range manifests {
		fails := checkManifest(m, events, pcrs, r.RuntimeEvents, checkpointed)
		if len(fails) == 0 {
			return m.Build
		}
		if best == nil || len(fails) < len(best) {
			best = fails
		}
	}
	r.Failures = append(r.Failures, best...)
	return ""
}

var pcr4Actions = []string{
	"Calling EFI Application from Boot Option",
	"Returning from EFI Application from Boot Option",
}

// checkpointed: the runtime log starts with a checkpoint this verifier
// issued after a passing appraisal, which checked the boot phases then;
// they are no longer in the log.
func checkManifest(m *Manifest, events []attest.Event, pcrs map[int][]byte, runtime []measure.Event, checkpointed bool) []*CheckError {
	var out []*CheckError
	var pcr7 []attest.Event
	apps := 0
	for _, e := range events {
		switch e.Index {
		case 7:
			pcr7 = append(pcr7, e)
		case 4:
			switch uint32(e.Type) {
			case tcgevent.EvEFIBootServicesApp:
				apps++
				if !containsHex(m.BootApplications, e.Digest) {
					out = append(out, fail(CheckBootApp, "unknown boot application %s", hex.EncodeToString(e.Digest)))
				}
			case tcgevent.EvEFIAction:
				if !slices.Contains(pcr4Actions, string(e.Data)) || !digestOf(e) {
					out = append(out, fail(CheckBootApp, "unexpected EFI action in PCR 4: %q", e.Data))
				}
			case tcgevent.EvSeparator:
				if !digestOf(e) {
					out = append(out, fail(CheckBootApp, "separator digest does not match its data"))
				}
			default:
				out = append(out, fail(CheckBootApp, "unexpected event type %v in PCR 4", e.Type))
			}
		}
	}
	if apps == 0 {
		out = append(out, fail(CheckBootApp, "no boot application was measured"))
	}
	if v, ok := pcrs[11]; !ok || !containsHex(m.PCR11, v) {
		out = append(out, fail(CheckPCR11, "PCR 11 %x is not a known build's", pcrs[11]))
	}
	if m.SecureBoot.Required {
		if err := checkSecureBoot(m, pcr7); err != nil {
			out = append(out, err)
		}
	}
	for _, i := range m.emptyPCRs() {
		if v, ok := pcrs[i]; !ok || !isZero(v) {
			out = append(out, fail(CheckEmptyPCR, "PCR %d must be empty", i))
		}
	}
	if len(m.Phases) > 0 && !checkpointed {
		got := measure.Phases(runtime)
		if len(got) < len(m.Phases) || !slices.Equal(got[:len(m.Phases)], m.Phases) {
			out = append(out, fail(CheckPhases, "boot phases %v, want %v first", got, m.Phases))
		}
	}
	return out
}

func digestOf(e attest.Event) bool {
	d := sha256.Sum256(e.Data)
	return bytes.Equal(d[:], e.Digest)
}

func checkSecureBoot(m *Manifest, pcr7 []attest.Event) *CheckError {
	sb, err := attest.ParseSecurebootState(pcr7)
	if err != nil {
		return fail(CheckSecureBoot, "%v", err)
	}
	if !sb.Enabled {
		return fail(CheckSecureBoot, "Secure Boot is disabled: turn it on in the firmware setup, or clear the firmware's Secure Boot keys (Setup Mode) so RigOS enrols its own at the next boot")
	}
	fingerprint := func(c x509.Certificate) string {
		s := sha256.Sum256(c.Raw)
		return hex.EncodeToString(s[:])
	}
	// Every key in db can sign what boots (and kernel modules): db holds
	// what the manifest names and nothing else.
	for _, c := range sb.PermittedKeys {
		if fp := fingerprint(c); !slices.Contains(m.SecureBoot.DBCerts, fp) && !slices.Contains(m.SecureBoot.OtherDBCerts, fp) {
			return fail(CheckSecureBoot, "db holds a certificate no manifest names (%q, SHA-256 %s): it could sign boot images and kernel modules", c.Subject.CommonName, fp[:16])
		}
	}
	if len(sb.PermittedHashes) > 0 {
		return fail(CheckSecureBoot, "db holds %d image hashes: any image with one of them would boot", len(sb.PermittedHashes))
	}
	if len(m.SecureBoot.KEKCerts) > 0 {
		for _, c := range sb.ExchangeKeys {
			if fp := fingerprint(c); !slices.Contains(m.SecureBoot.KEKCerts, fp) {
				return fail(CheckSecureBoot, "KEK holds a certificate no manifest names (%q, SHA-256 %s): its key can rewrite db", c.Subject.CommonName, fp[:16])
			}
		}
		if len(sb.ExchangeKeyHashes) > 0 {
			return fail(CheckSecureBoot, "KEK holds %d key hashes", len(sb.ExchangeKeyHashes))
		}
	}
	inDB := map[string]bool{}
	for _, c := range sb.PermittedKeys {
		inDB[fingerprint(c)] = true
	}
	for _, c := range append(sb.PreSeparatorAuthority, sb.PostSeparatorAuthority...) {
		fp := fingerprint(c)
		if inDB[fp] && slices.Contains(m.SecureBoot.DBCerts, fp) {
			return nil
		}
	}
	return fail(CheckSecureBoot, "the boot image was not verified by a RigOS db certificate")
}
