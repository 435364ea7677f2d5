package attestation_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rigos/rigos/internal/sim/devboot"
	"github.com/rigos/rigos/internal/sim/simnode"
	"github.com/rigos/rigos/internal/sim/tcglog"
	"github.com/rigos/rigos/internal/sim/tpmsim"
	. "github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/attestation/collect"
	"github.com/rigos/rigos/pkg/attestation/tcgevent"
	"github.com/rigos/rigos/pkg/measure"
	"github.com/rigos/rigos/pkg/tpm"
)

// boot starts a simulated node booted with cfg. The simulator is a
// process-wide singleton, so these tests never run in parallel.
func boot(t testing.TB, seed int64, cfg devboot.Config) *simnode.Node {
	t.Helper()
	if !tpmsim.Available {
		t.Skip("TPM simulator needs cgo")
	}
	n, err := simnode.Start(seed, cfg, t.TempDir())
	if err != nil {
		t.Fatalf("simnode.Start() = %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func nonce(t testing.TB) []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// gather gathers evidence for a fresh nonce.
func gather(t testing.TB, n *simnode.Node) (Evidence, []byte) {
	t.Helper()
	no := nonce(t)
	ev, err := n.Att.Collect(no, DefaultPCRs, n.ReadRuntimeLog)
	if err != nil {
		t.Fatalf("Collect() = %v", err)
	}
	return ev, no
}

func request(n *simnode.Node, ev Evidence, no []byte, m ...*Manifest) Request {
	if len(m) == 0 {
		m = []*Manifest{devboot.Manifest(devboot.Default(), "dev")}
	}
	return Request{AKPublic: n.Att.AKParams().Public, Nonce: no, PCRs: DefaultPCRs, Evidence: ev, Manifests: m}
}

// failed returns the checks that failed.
func failed(r *Result) []Check {
	var out []Check
	for _, f := range r.Failures {
		out = append(out, f.Check)
	}
	return out
}

func wantFail(t *testing.T, r *Result, c Check) {
	t.Helper()
	if !slices.Contains(failed(r), c) {
		t.Fatalf("Appraise() failures = %v (%v), want %s", failed(r), r.Err(), c)
	}
}

func TestGenuineNodePasses(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	r := Appraise(request(n, ev, no))
	if err := r.Err(); err != nil {
		t.Fatalf("Appraise(genuine) = %v", err)
	}
	if r.Manifest != "dev" {
		t.Errorf("Manifest = %q, want dev", r.Manifest)
	}
	if len(r.FirmwarePCRs) != len(FirmwarePCRs) {
		t.Errorf("FirmwarePCRs has %d entries, want %d", len(r.FirmwarePCRs), len(FirmwarePCRs))
	}
	// The same evidence passes again with its pins and clock.
	req := request(n, ev, no)
	req.PinnedFirmware = r.FirmwarePCRs
	req.LastClock = &r.Quote.Clock
	if err := Appraise(req).Err(); err != nil {
		t.Fatalf("Appraise(with pins) = %v", err)
	}
}

func TestEnrolment(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ekDER, err := n.Att.EKPublic()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := AppraiseEK(ekDER, n.Att.EKCertificate(), nil, nil, time.Now())
	if err != nil {
		t.Fatalf("AppraiseEK() = %v", err)
	}
	if ek.Class != ClassDev {
		t.Errorf("simulator EK class = %s, want dev", ek.Class)
	}
	secret, cred, err := MakeCredential(ek.Public, n.Att.AKParams(), nil)
	if err != nil {
		t.Fatalf("MakeCredential() = %v", err)
	}
	got, err := n.Att.Activate(cred)
	if err != nil {
		t.Fatalf("Activate() = %v", err)
	}
	if err := VerifyActivation(secret, got); err != nil {
		t.Fatalf("VerifyActivation() = %v", err)
	}
	// One bit flipped (replacing a byte with a constant would leave the
	// secret unchanged when it already held that byte: 1 run in 256).
	if err := VerifyActivation(secret, append([]byte{got[0] ^ 1}, got[1:]...)); CheckOf(err) != CheckActivation {
		t.Fatalf("VerifyActivation(wrong) = %v, want %s", err, CheckActivation)
	}
}

// An AK whose credential is made for another EK cannot be activated: the
// AK is not in the TPM that holds that EK.
func TestActivationWithWrongEK(t *testing.T) {
	other := boot(t, 2, devboot.Default())
	otherEK, _ := other.Att.EKPublic()
	other.Close()

	n := boot(t, 1, devboot.Default())
	ek, err := AppraiseEK(otherEK, nil, nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret, cred, err := MakeCredential(ek.Public, n.Att.AKParams(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := n.Att.Activate(cred)
	if err == nil {
		err = VerifyActivation(secret, got)
	} else {
		err = VerifyActivation(secret, nil)
	}
	if CheckOf(err) != CheckActivation {
		t.Fatalf("activation with another TPM's EK = %v, want %s", err, CheckActivation)
	}
}

func TestBadAKAttributes(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	good := n.Att.AKParams()
	if err := VerifyAK(good); err != nil {
		t.Fatalf("VerifyAK(real AK) = %v", err)
	}
	// TPMT_PUBLIC: type(2) nameAlg(2) attributes(4).
	for name, bit := range map[string]uint32{
		"fixedTPM": 1 << 1, "fixedParent": 1 << 4, "sensitiveDataOrigin": 1 << 5, "restricted": 1 << 16, "sign": 1 << 18,
	} {
		p := good
		p.Public = bytes.Clone(good.Public)
		a := binary.BigEndian.Uint32(p.Public[4:8])
		binary.BigEndian.PutUint32(p.Public[4:8], a&^bit)
		if err := VerifyAK(p); CheckOf(err) != CheckAK {
			t.Errorf("VerifyAK(without %s) = %v, want %s", name, err, CheckAK)
		}
	}
	p := good
	p.Public = bytes.Clone(good.Public)
	a := binary.BigEndian.Uint32(p.Public[4:8])
	binary.BigEndian.PutUint32(p.Public[4:8], a|1<<17) // decrypt
	if err := VerifyAK(p); CheckOf(err) != CheckAK {
		t.Errorf("VerifyAK(decrypt set) = %v, want %s", err, CheckAK)
	}
	// Attributes intact but the creation proof is for another key.
	p = good
	p.CreateSignature = bytes.Clone(good.CreateSignature)
	p.CreateSignature[len(p.CreateSignature)-1] ^= 1
	if err := VerifyAK(p); CheckOf(err) != CheckAK {
		t.Errorf("VerifyAK(forged creation signature) = %v, want %s", err, CheckAK)
	}
}

func TestQuoteTampering(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)

	t.Run("other nonce", func(t *testing.T) {
		wantFail(t, Appraise(request(n, ev, nonce(t))), CheckNonce)
	})
	t.Run("forged quote", func(t *testing.T) {
		e := ev
		e.Quote = bytes.Clone(ev.Quote)
		e.Quote[len(e.Quote)-1] ^= 1
		wantFail(t, Appraise(request(n, e, no)), CheckSignature)
	})
	t.Run("lied PCR", func(t *testing.T) {
		e := ev
		e.PCRs = map[int][]byte{}
		for i, v := range ev.PCRs {
			e.PCRs[i] = v
		}
		e.PCRs[4] = make([]byte, 32)
		wantFail(t, Appraise(request(n, e, no)), CheckPCRDigest)
	})
	t.Run("other AK", func(t *testing.T) {
		other, err := collectOtherAK(n)
		if err != nil {
			t.Fatal(err)
		}
		r := request(n, ev, no)
		r.AKPublic = other
		wantFail(t, Appraise(r), CheckSignature)
	})
	t.Run("fewer PCRs", func(t *testing.T) {
		r := request(n, ev, no)
		r.PCRs = []int{0, 1, 2}
		wantFail(t, Appraise(r), CheckPCRSelection)
	})
	t.Run("garbage", func(t *testing.T) {
		e := ev
		e.Quote, e.Signature = []byte("garbage"), []byte{0}
		wantFail(t, Appraise(request(n, e, no)), CheckEvidence)
	})
}

// collectOtherAK creates a second, genuine AK in the same TPM: it is still
// not the pinned one. (Closing it would close the shared simulator.)
func collectOtherAK(n *simnode.Node) ([]byte, error) {
	a, err := collect.Open(tpm.WithLog(n.Sim, nil), nil)
	if err != nil {
		return nil, err
	}
	return a.AKParams().Public, nil
}

func TestClockRollback(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	q := Appraise(request(n, ev, no)).Quote
	for name, prev := range map[string]Clock{
		"resetCount back":   {Clock: q.Clock.Clock, ResetCount: q.Clock.ResetCount + 1},
		"restartCount back": {Clock: q.Clock.Clock, ResetCount: q.Clock.ResetCount, RestartCount: q.Clock.RestartCount + 1},
		"clock back":        {Clock: q.Clock.Clock + 1000, ResetCount: q.Clock.ResetCount, RestartCount: q.Clock.RestartCount},
	} {
		r := request(n, ev, no)
		r.LastClock = &prev
		if res := Appraise(r); !slices.Contains(failed(res), CheckClock) {
			t.Errorf("Appraise(%s) failures = %v, want %s", name, failed(res), CheckClock)
		}
	}
	// A reboot (earlier resetCount) is allowed and reported.
	r := request(n, ev, no)
	r.LastClock = &Clock{Clock: 0, ResetCount: q.Clock.ResetCount - 1}
	if q.Clock.ResetCount == 0 {
		r.LastClock = nil
	}
	res := Appraise(r)
	if err := res.Err(); err != nil {
		t.Fatalf("Appraise(after reboot) = %v", err)
	}
}

// Event log tampering: each edit of the recorded log must fail.
func TestFirmwareLogTampering(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	events := splitLog(t, ev.FirmwareLog)
	// Find the PCR 4 application event and two PCR 0 events.
	app := -1
	var pcr0 []int
	for i, e := range events[1:] {
		pcr, typ := binary.LittleEndian.Uint32(e[0:4]), binary.LittleEndian.Uint32(e[4:8])
		if pcr == 4 && typ == tcgevent.EvEFIBootServicesApp {
			app = i + 1
		}
		if pcr == 0 && typ != tcgevent.EvNoAction {
			pcr0 = append(pcr0, i+1)
		}
	}
	if app < 0 || len(pcr0) < 2 {
		t.Fatal("recorded log lacks the expected events")
	}
	join := func(ev [][]byte) []byte { return bytes.Join(ev, nil) }
	relabel := slices.Clone(events)
	relabel[app] = bytes.Clone(events[app])
	binary.LittleEndian.PutUint32(relabel[app][4:8], tcgevent.EvEFIAction)
	removed := slices.Delete(slices.Clone(events), pcr0[0], pcr0[0]+1)
	reordered := slices.Clone(events)
	reordered[pcr0[0]], reordered[pcr0[1]] = events[pcr0[1]], events[pcr0[0]]
	extra := tcglog.New()
	extra.Measure(0, tcgevent.EvPostCode, []byte("extra"))
	appended := append(slices.Clone(events), splitLog(t, extra.Bytes())[1:]...)

	for name, tc := range map[string]struct {
		log  []byte
		want Check
	}{
		"relabelled": {join(relabel), CheckBootApp},
		"removed":    {join(removed), CheckFirmwareLog},
		"reordered":  {join(reordered), CheckFirmwareLog},
		"appended":   {join(appended), CheckFirmwareLog},
		"truncated":  {ev.FirmwareLog[:len(ev.FirmwareLog)-7], CheckFirmwareLog},
		"empty":      {nil, CheckFirmwareLog},
		"oversize":   {make([]byte, MaxFirmwareLog+1), CheckEvidence},
	} {
		t.Run(name, func(t *testing.T) {
			e := ev
			e.FirmwareLog = tc.log
			wantFail(t, Appraise(request(n, e, no)), tc.want)
		})
	}
}

// splitLog splits a crypto-agile SHA-256 log written by tcglog into its
// records (the Spec ID event first).
func splitLog(t *testing.T, b []byte) [][]byte {
	t.Helper()
	n := 32 + int(binary.LittleEndian.Uint32(b[28:32]))
	out := [][]byte{b[:n]}
	for b = b[n:]; len(b) > 0; {
		size := 4 + 4 + 4 + 2 + 32
		l := size + 4 + int(binary.LittleEndian.Uint32(b[size:size+4]))
		out = append(out, b[:l])
		b = b[l:]
	}
	return out
}

func TestUnloggedExtend(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	if err := tpm.Extend(n.Sim, 14, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	ev, no := gather(t, n)
	wantFail(t, Appraise(request(n, ev, no)), CheckUnlogged)
}

func TestRuntimeLogTampering(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	e := ev
	e.RuntimeLog = bytes.Replace(ev.RuntimeLog, []byte("start-agent"), []byte("start-AGENT"), 1)
	wantFail(t, Appraise(request(n, e, no)), CheckRuntimeLog)
	e.RuntimeLog = nil
	wantFail(t, Appraise(request(n, e, no)), CheckRuntimeLog)
}

func TestPolicyViolations(t *testing.T) {
	changed := devboot.Default()
	changed.Sections = slices.Clone(changed.Sections)
	changed.Sections[2] = devboot.Section{Name: ".cmdline", Content: []byte("init=/bin/sh")}
	noSB := devboot.Default()
	noSB.SecureBoot = false
	foreign := devboot.Default()
	foreign.Signer = devboot.Cert("someone else's db", 9)
	foreign.DB = foreign.Signer
	debug := devboot.Default()
	debug.DebugMode = true
	pcr12 := devboot.Default()
	pcr12.Extra = []devboot.Extra{{PCR: 12, Type: tcgevent.EvIPL, Data: []byte("init=/bin/sh")}}
	fw := devboot.Default()
	fw.Firmware = "another motherboard"
	// A second db certificate beside RigOS's: the UKI is still verified by
	// RigOS's, but the other key could sign boot images and modules.
	extraDB := devboot.Default()
	extraDB.ExtraDB = []*x509.Certificate{devboot.Cert("owner's module key", 11)}
	extraKEK := devboot.Default()
	extraKEK.ExtraKEK = []*x509.Certificate{devboot.Cert("owner's KEK", 12)}

	pinned := func() map[int][]byte {
		n := boot(t, 1, devboot.Default())
		ev, no := gather(t, n)
		r := Appraise(request(n, ev, no))
		n.Close()
		return r.FirmwarePCRs
	}()

	for name, tc := range map[string]struct {
		cfg  devboot.Config
		want []Check
		pin  bool
	}{
		"changed command line": {cfg: changed, want: []Check{CheckBootApp, CheckPCR11}},
		"secure boot off":      {cfg: noSB, want: []Check{CheckSecureBoot}},
		"foreign signing key":  {cfg: foreign, want: []Check{CheckSecureBoot}},
		"debug mode":           {cfg: debug, want: []Check{CheckSecureBoot}},
		"PCR 12 used":          {cfg: pcr12, want: []Check{CheckEmptyPCR}},
		"firmware changed":     {cfg: fw, want: []Check{CheckFirmwarePins}, pin: true},
		"extra db certificate": {cfg: extraDB, want: []Check{CheckSecureBoot}},
		"extra KEK":            {cfg: extraKEK, want: []Check{CheckSecureBoot}},
	} {
		t.Run(name, func(t *testing.T) {
			n := boot(t, 1, tc.cfg)
			ev, no := gather(t, n)
			req := request(n, ev, no)
			if tc.pin {
				req.PinnedFirmware = pinned
			}
			r := Appraise(req)
			for _, c := range tc.want {
				wantFail(t, r, c)
			}
		})
	}
}

func TestNoManifest(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	r := request(n, ev, no)
	r.Manifests = nil
	wantFail(t, Appraise(r), CheckManifest)
	// During a rollout any active manifest may accept.
	other := devboot.Manifest(devboot.Config{Sections: []devboot.Section{{Name: ".linux", Content: []byte("x")}}}, "old")
	r.Manifests = []*Manifest{other, devboot.Manifest(devboot.Default(), "new")}
	if res := Appraise(r); res.Err() != nil || res.Manifest != "new" {
		t.Fatalf("Appraise(two manifests) = %v, manifest %q; want pass with new", res.Err(), res.Manifest)
	}
}

// A firmware log that is only the Spec ID header replays to nothing. It
// must fail, and the policy must still run: a node whose log says nothing
// proves nothing.
func TestHeaderOnlyFirmwareLog(t *testing.T) {
	for name, cfg := range map[string]devboot.Config{
		"genuine boot":    devboot.Default(),
		"Secure Boot off": func() devboot.Config { c := devboot.Default(); c.SecureBoot = false; return c }(),
		"foreign UKI":     {Sections: []devboot.Section{{Name: ".linux", Content: []byte("someone else's kernel")}}},
		"PCR 12 extended": func() devboot.Config {
			c := devboot.Default()
			c.Extra = append(c.Extra, devboot.Extra{PCR: 12, Type: tcgevent.EvIPL, Data: []byte("x")})
			return c
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			n := boot(t, 1, cfg)
			ev, no := gather(t, n)
			ev.FirmwareLog = splitLog(t, ev.FirmwareLog)[0]
			r := Appraise(request(n, ev, no))
			if r.Err() == nil || r.Manifest != "" {
				t.Fatalf("Appraise(header-only log) passed with build %q", r.Manifest)
			}
			wantFail(t, r, CheckFirmwareLog)
			wantFail(t, r, CheckUnlogged)
			wantFail(t, r, CheckBootApp) // the policy ran: no boot application
		})
	}
}

// EV_NO_ACTION events extend nothing. The ones the specification defines
// may appear; anything else is padding and fails.
func TestNoActionPadding(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	with := func(data ...[]byte) []byte {
		l := tcglog.New()
		for _, d := range data {
			l.Append(0, tcgevent.EvNoAction, make([]byte, 32), d)
		}
		return append(bytes.Clone(ev.FirmwareLog), bytes.Join(splitLog(t, l.Bytes())[1:], nil)...)
	}
	locality := append([]byte("StartupLocality\x00"), 3)
	for name, tc := range map[string]struct {
		log  []byte
		pass bool
	}{
		"startup locality":  {with(locality), true},
		"unknown signature": {with([]byte("RigOS-is-fine!!!\x00anything")), false},
		"short":             {with([]byte("x")), false},
		"too many":          {with(slices.Repeat([][]byte{locality}, MaxNoActionEvents+1)...), false},
	} {
		t.Run(name, func(t *testing.T) {
			e := ev
			e.FirmwareLog = tc.log
			r := Appraise(request(n, e, no))
			if tc.pass {
				if err := r.Err(); err != nil {
					t.Fatalf("Appraise() = %v, want pass", err)
				}
				return
			}
			wantFail(t, r, CheckFirmwareLog)
		})
	}
}

// Events for a PCR the challenge did not quote cannot be verified, so a
// log carrying them fails rather than being half-read.
func TestEventsForUnquotedPCR(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	l := tcglog.New()
	l.Measure(10, tcgevent.EvIPL, []byte("not quoted"))
	ev.FirmwareLog = append(bytes.Clone(ev.FirmwareLog), bytes.Join(splitLog(t, l.Bytes())[1:], nil)...)
	wantFail(t, Appraise(request(n, ev, no)), CheckFirmwareLog)
}

// The PCRs the policy reads must have events: a boot without PCR 11
// events (no UKI stub) fails although PCR 11 itself is all zeros.
func TestPolicyPCRsNeedEvents(t *testing.T) {
	n := boot(t, 1, devboot.Config{SecureBoot: true})
	ev, no := gather(t, n)
	r := Appraise(request(n, ev, no))
	wantFail(t, r, CheckFirmwareLog)
	if !strings.Contains(r.Err().Error(), "11") {
		t.Errorf("Appraise() = %v, want PCR 11 named", r.Err())
	}
}

// A node proving a retired build fails naming the build and why; the
// retirement rules cover a name, a minimum creation time and expiry.
func TestRetiredBuild(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	ev, no := gather(t, n)
	m := devboot.Manifest(devboot.Default(), "old")
	now := m.Created.Add(48 * time.Hour)
	for name, tc := range map[string]struct {
		r       Retirement
		expires time.Time
		want    string
	}{
		"by name":     {r: Retirement{Builds: []string{"old"}}, want: "build old is retired"},
		"minimum":     {r: Retirement{MinCreated: m.Created.Add(time.Hour)}, want: "older than the minimum build"},
		"expired":     {expires: now.Add(-time.Second), want: "expired"},
		"not retired": {r: Retirement{Builds: []string{"other"}, MinCreated: m.Created}, expires: now.Add(time.Hour)},
	} {
		t.Run(name, func(t *testing.T) {
			mm := *m
			mm.Expires = tc.expires
			why := tc.r.Retired(&mm, now)
			if (why == "") != (tc.want == "") || !strings.Contains(why, tc.want) {
				t.Fatalf("Retired() = %q, want %q", why, tc.want)
			}
			if why == "" {
				return
			}
			req := request(n, ev, no)
			req.Manifests, req.Retired, req.RetiredWhy = nil, []*Manifest{&mm}, map[string]string{mm.Build: why}
			r := Appraise(req)
			wantFail(t, r, CheckManifest)
			if !strings.Contains(r.Reason(), why) {
				t.Errorf("Appraise(retired) reason = %q, want %q", r.Reason(), why)
			}
		})
	}
}

// A runtime log compacted to a checkpoint passes only with a checkpoint
// this verifier issued, for this boot; the node cannot invent one.
func TestRuntimeCheckpoint(t *testing.T) {
	n := boot(t, 1, devboot.Default())
	rec, err := measure.NewRecorder(n.RuntimeLog, func(pcr int, d []byte) error { return tpm.Extend(n.Sim, pcr, d) })
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := rec.Record(measure.KindWorkload, measure.Workload{ID: fmt.Sprint("w", i), Digest: "sha256:abc"}.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	ev, no := gather(t, n)
	first := Appraise(request(n, ev, no))
	if err := first.Err(); err != nil {
		t.Fatal(err)
	}
	events, _ := measure.Parse(ev.RuntimeLog)
	issued := measure.Checkpoint{Boot: first.Quote.Clock.ResetCount, Events: uint64(len(events)),
		PCR: hex.EncodeToString(first.Quote.PCRs[measure.RuntimePCR]), GPU: "none"}.Encode()
	if err := rec.Compact(issued); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Record(measure.KindWorkload, measure.Workload{ID: "later", Digest: "sha256:abc"}.Encode()); err != nil {
		t.Fatal(err)
	}
	ev, no = gather(t, n)
	otherBoot := measure.Checkpoint{Boot: first.Quote.Clock.ResetCount + 1, Events: uint64(len(events)),
		PCR: hex.EncodeToString(first.Quote.PCRs[measure.RuntimePCR]), GPU: "none"}.Encode()
	for name, tc := range map[string]struct {
		issued [][]byte
		pass   bool
	}{
		"issued":      {[][]byte{issued}, true},
		"none issued": {nil, false},
		"another's":   {[][]byte{otherBoot}, false},
	} {
		t.Run(name, func(t *testing.T) {
			req := request(n, ev, no)
			req.Checkpoints = tc.issued
			r := Appraise(req)
			if tc.pass {
				if err := r.Err(); err != nil || r.RuntimeBase == nil || len(r.RuntimeEvents) != 1 {
					t.Fatalf("Appraise(compacted log) = %v, base %v, %d events after it", err, r.RuntimeBase, len(r.RuntimeEvents))
				}
				return
			}
			wantFail(t, r, CheckRuntimeLog)
		})
	}
	// A checkpoint issued for another boot is refused even when offered.
	forged := measure.NewEvent(uint64(len(events))-1, measure.KindCheckpoint, otherBoot).Encode()
	rest, _ := measure.Parse(ev.RuntimeLog)
	var b bytes.Buffer
	b.Write(forged)
	for _, e := range rest[1:] {
		b.Write(e.Encode())
	}
	e := ev
	e.RuntimeLog = b.Bytes()
	req := request(n, e, no)
	req.Checkpoints = [][]byte{otherBoot}
	wantFail(t, Appraise(req), CheckRuntimeLog)
}

// Boot variables (PCR 1) and the boot disk's GPT (PCR 5) are not pinned
// with the firmware: an install to another disk, an update's BootNext or
// a stick taken out changes them on the same motherboard. Any other
// change to those PCRs still fails the pins. Pins stored as raw PCR
// values by an older verifier still match, and are marked for re-pinning.
func TestBootPathsNotPinned(t *testing.T) {
	withPaths := func(bootVars, gpt string, extra ...devboot.Extra) devboot.Config {
		c := devboot.Default()
		c.Extra = append([]devboot.Extra{
			{PCR: 1, Type: tcgevent.EvEFIVariableBoot, Data: devboot.GlobalVar("BootOrder", []byte(bootVars))},
			{PCR: 1, Type: tcgevent.EvEFIVariableBoot2, Data: devboot.GlobalVar("Boot0001", []byte(bootVars+" (entry)"))},
			{PCR: 5, Type: tcgevent.EvEFIGPTEvent, Data: []byte(gpt)},
		}, extra...)
		return c
	}
	appraise := func(cfg devboot.Config, pinned map[int][]byte) (*Result, map[int][]byte) {
		n := boot(t, 1, cfg)
		defer n.Close()
		ev, no := gather(t, n)
		req := request(n, ev, no)
		req.PinnedFirmware = pinned
		raw := map[int][]byte{}
		for _, i := range FirmwarePCRs {
			raw[i] = ev.PCRs[i]
		}
		return Appraise(req), raw
	}
	stick, stickRaw := appraise(withPaths("BootOrder 0001; Boot0001 USB stick", "GPT of the stick"), nil)
	if err := stick.Err(); err != nil {
		t.Fatal(err)
	}
	pins := stick.FirmwarePCRs
	for _, i := range []int{1, 5} {
		if bytes.Equal(pins[i], stickRaw[i]) {
			t.Errorf("PCR %d pinned as its raw value, boot path included", i)
		}
	}

	installed := withPaths("BootOrder 0002,0001; Boot0002 HD(1,GPT,...)/\\EFI\\RIGOS\\rigos-a.efi", "GPT of the NVMe disk")
	if r, _ := appraise(installed, pins); r.Err() != nil || r.LegacyPins {
		t.Errorf("other boot variables and GPT: %v (legacy pins %t), want a pass", r.Err(), r.LegacyPins)
	}
	// Another variable in PCR 1 (firmware configuration) is the firmware.
	reconfigured := withPaths("BootOrder 0001; Boot0001 USB stick", "GPT of the stick",
		devboot.Extra{PCR: 1, Type: tcgevent.EvEFIVariableDriverCfg, Data: []byte("another firmware setting")})
	r, _ := appraise(reconfigured, pins)
	wantFail(t, r, CheckFirmwarePins)
	// A GPT-typed event in PCR 1 is not a boot path there.
	misplaced := withPaths("BootOrder 0001; Boot0001 USB stick", "GPT of the stick",
		devboot.Extra{PCR: 1, Type: tcgevent.EvEFIGPTEvent, Data: []byte("not the firmware's")})
	r, _ = appraise(misplaced, pins)
	wantFail(t, r, CheckFirmwarePins)
	// An event's type is not measured: a firmware setting relabelled as a
	// boot variable, or boot-variable data that is not what was measured,
	// is not a boot path, and stays pinned.
	relabelled := func(data, digest []byte) devboot.Config {
		return withPaths("BootOrder 0001; Boot0001 USB stick", "GPT of the stick",
			devboot.Extra{PCR: 1, Type: tcgevent.EvEFIVariableBoot, Data: data, Digest: digest})
	}
	pinsWith := func(cfg devboot.Config) map[int][]byte {
		r, _ := appraise(cfg, nil)
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		return r.FirmwarePCRs
	}
	for name, tc := range map[string]struct{ before, after devboot.Config }{
		"not a boot variable": {
			relabelled(devboot.GlobalVar("SetupMode", []byte{0}), nil),
			relabelled(devboot.GlobalVar("SetupMode", []byte{1}), nil)},
		"data not what was measured": {
			relabelled(devboot.GlobalVar("Boot0002", []byte("entry")), bytes.Repeat([]byte{1}, 32)),
			relabelled(devboot.GlobalVar("Boot0002", []byte("entry")), bytes.Repeat([]byte{2}, 32))},
		"not a UEFI variable": {
			relabelled([]byte("firmware setting A"), nil),
			relabelled([]byte("firmware setting B"), nil)},
	} {
		r, _ := appraise(tc.after, pinsWith(tc.before))
		if !slices.Contains(failed(r), CheckFirmwarePins) {
			t.Errorf("%s: a change hidden as a boot variable passed the pins", name)
		}
	}

	// Raw pins from before: the same boot passes and asks for re-pinning.
	r, _ = appraise(withPaths("BootOrder 0001; Boot0001 USB stick", "GPT of the stick"), stickRaw)
	if r.Err() != nil || !r.LegacyPins {
		t.Errorf("raw pins, same boot: %v, legacy %t; want a pass marked for re-pinning", r.Err(), r.LegacyPins)
	}
}

// A boot that opened its state with a key another build handed over
// passes only if that build is active: a retired build, or anything
// else that can run under the same Secure Boot keys, fails.
func TestStateKeyHandover(t *testing.T) {
	m := devboot.Manifest(devboot.Default(), "dev")
	predecessor := devboot.Manifest(devboot.Default(), "predecessor")
	predecessor.PCR11 = []string{strings.Repeat("ab", 32)}
	for name, tc := range map[string]struct {
		data    string
		active  []*Manifest
		wantErr bool
	}{
		"active predecessor":  {measure.StateKeyHandover + strings.Repeat("ab", 32), []*Manifest{m, predecessor}, false},
		"retired predecessor": {measure.StateKeyHandover + strings.Repeat("ab", 32), []*Manifest{m}, true},
		"this build":          {measure.StateKeyHandover + m.PCR11[0], []*Manifest{m}, false},
		"malformed":           {"handover zz", []*Manifest{m, predecessor}, true},
	} {
		t.Run(name, func(t *testing.T) {
			n := boot(t, 1, devboot.Default())
			rec, err := measure.NewRecorder(n.RuntimeLog, func(pcr int, d []byte) error { return tpm.Extend(n.Sim, pcr, d) })
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rec.Record(measure.KindStateKey, []byte(tc.data)); err != nil {
				t.Fatal(err)
			}
			ev, no := gather(t, n)
			req := request(n, ev, no)
			req.Manifests = tc.active
			r := Appraise(req)
			if !tc.wantErr {
				if err := r.Err(); err != nil {
					t.Fatalf("Appraise = %v, want a pass", err)
				}
				return
			}
			wantFail(t, r, CheckStateKey)
		})
	}
}
