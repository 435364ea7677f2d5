// Package config is the verifier's file configuration.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"github.com/rigos/rigos/attest/internal/verifier"
	"github.com/rigos/rigos/pkg/attestation"
	"github.com/rigos/rigos/pkg/config"
	"github.com/rigos/rigos/pkg/measure"
)

// SpotCheck controls the random attestation rounds.
type SpotCheck struct {
	// Mean time between rounds (exponential). Default is "5m".
	Mean config.Duration `json:"mean"`
	// Min and Max clamp each interval; a trusted verdict lasts Max plus
	// the deadline. Defaults are "30s" and "10m".
	Min config.Duration `json:"min"`
	Max config.Duration `json:"max"`
	// Deadline is the time a node has to answer. Default is "10s".
	Deadline config.Duration `json:"deadline"`
}

// Enrolment limits strangers: every TPM the verifier does not know yet
// costs an enrolment, and every stream holds a handshake slot until it
// has proven its TPM.
type Enrolment struct {
	// Rate is the sustained number of new TPMs per second. Default is 2.
	Rate float64 `json:"rate"`
	// Burst is how many may come at once. Default is 50.
	Burst int `json:"burst"`
	// MaxHandshakes bounds streams still in their handshake. Default is
	// 256.
	MaxHandshakes int `json:"max_handshakes"`
}

// Config is the attest configuration file (JSON). Relative paths are
// relative to the file's folder.
type Config struct {
	// Listen is the address agents dial (TLS). Default is ":7443".
	Listen string `json:"listen"`
	// AdminSocket is the Unix socket of the admin API. Default is
	// "/run/rigos-attest/admin.sock".
	AdminSocket string `json:"admin_socket"`
	// TLSCert and TLSKey are the server certificate and key (PEM).
	// Required.
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	// Database is the SQLite file. Default is
	// "/var/lib/rigos-attest/attest.db".
	Database string `json:"database"`
	// SigningKey is the Ed25519 key (PKCS#8 PEM) that signs attestation
	// results. Required.
	SigningKey string `json:"signing_key"`
	// ManifestDir holds signed reference manifests (*.json). Required.
	ManifestDir string `json:"manifest_dir"`
	// UpdateDir holds builds to update nodes to (attest update): a folder
	// per build, named for it, holding the imager's output. A build's
	// manifest must also be in ManifestDir. Default is none (no updates).
	UpdateDir string `json:"update_dir"`
	// UpdateURL is where an HTTPS server serves UpdateDir's folders
	// ("https://updates.example.com/builds": <url>/<build>/system.img):
	// an update or rollout with -fetch tells nodes to fetch the build
	// from there rather than receive it on their stream. Nodes verify the
	// server against the CA roots in their image. Default is none.
	UpdateURL string `json:"update_url"`
	// ManifestKeys are the Ed25519 public keys (PEM) trusted to sign
	// manifests. Required.
	ManifestKeys []string `json:"manifest_keys"`
	// RetiredBuilds are builds no longer accepted: a node that proves one
	// of them is untrusted, naming it. Default is none.
	RetiredBuilds []string `json:"retired_builds"`
	// MinBuildCreated retires every build whose manifest was created
	// before it (RFC 3339): the fleet's minimum build. Default is none.
	MinBuildCreated time.Time `json:"min_build_created"`
	// EKRoots and EKIntermediates are TPM manufacturers' CA certificates
	// (PEM files), added to the built-in bundle (EKRootsBuiltin). EKs
	// whose certificate chains to them are hardware-class; the others are
	// dev-class. Default is none.
	EKRoots         []string `json:"ek_roots"`
	EKIntermediates []string `json:"ek_intermediates"`
	// EKRootsBuiltin trusts RigOS's built-in bundle of TPM manufacturers'
	// EK CAs (Infineon, Nuvoton, STMicroelectronics, Intel PTT, AMD fTPM
	// and Pluton, Microsoft Pluton, NSING, Nationz; listed in
	// attest/internal/ekroots/SOURCES.md). Set it to false to trust only
	// EKRoots. It changes only the trust class, never what is refused
	// unless RefuseDev is set. Default is true.
	EKRootsBuiltin *bool `json:"ek_roots_builtin"`
	// AllowDev lets dev-class TPMs (software TPMs, uncertified EKs) be
	// trusted. Default is false.
	AllowDev bool `json:"allow_dev"`
	// RefuseDev refuses dev-class TPMs at the hello, so they are never
	// enrolled: the production setting. Default is false.
	RefuseDev bool `json:"refuse_dev"`
	// Enrolment bounds how fast new TPMs may enrol and how many streams
	// may be in their handshake at once.
	Enrolment Enrolment `json:"enrolment"`
	// StreamsPerConnection bounds the concurrent streams of one agent
	// connection (an agent needs one session). Default is 4.
	StreamsPerConnection uint32 `json:"streams_per_connection"`
	// PCRs to quote. Default is 0-9 and 11-15.
	PCRs []int `json:"pcrs"`
	// SpotCheck controls the random rounds.
	SpotCheck SpotCheck `json:"spot_check"`
	// HandshakeTimeout bounds a stream's whole handshake (hello and
	// credential activation). Default is "30s".
	HandshakeTimeout config.Duration `json:"handshake_timeout"`
	// EvidenceDir, if set, keeps a full dump (JSON) of every appraisal:
	// challenge, quote, PCRs, event logs and verdict. Default is none.
	EvidenceDir string `json:"evidence_dir"`
	// LogLevel is debug, info, warn or error. Default is "info".
	LogLevel string `json:"log_level"`
}

// Load reads path, applies defaults and validates.
func Load(path string) (*Config, error) {
	var c Config
	if err := config.Load(path, &c); err != nil {
		return nil, err
	}
	c.resolve(filepath.Dir(path))
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) resolve(dir string) {
	for _, p := range []*string{&c.TLSCert, &c.TLSKey, &c.Database, &c.SigningKey, &c.ManifestDir, &c.UpdateDir, &c.AdminSocket, &c.EvidenceDir} {
		*p = config.Resolve(dir, *p)
	}
	for _, l := range [][]string{c.ManifestKeys, c.EKRoots, c.EKIntermediates} {
		for i := range l {
			l[i] = config.Resolve(dir, l[i])
		}
	}
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setD := func(p *config.Duration, v time.Duration) {
		if *p == 0 {
			*p = config.Duration(v)
		}
	}
	set(&c.Listen, ":7443")
	set(&c.AdminSocket, "/run/rigos-attest/admin.sock")
	set(&c.Database, "/var/lib/rigos-attest/attest.db")
	set(&c.LogLevel, "info")
	setD(&c.SpotCheck.Mean, 5*time.Minute)
	setD(&c.SpotCheck.Min, 30*time.Second)
	setD(&c.SpotCheck.Max, 10*time.Minute)
	setD(&c.SpotCheck.Deadline, 10*time.Second)
	setD(&c.HandshakeTimeout, 30*time.Second)
	if c.EKRootsBuiltin == nil {
		builtin := true
		c.EKRootsBuiltin = &builtin
	}
	if c.StreamsPerConnection == 0 {
		c.StreamsPerConnection = 4
	}
	// The verifier applies its defaults to zero values; they are filled
	// in here only so that a loaded config shows them.
	if c.Enrolment.Rate == 0 {
		c.Enrolment.Rate = verifier.DefaultEnrolRate
	}
	if c.Enrolment.Burst == 0 {
		c.Enrolment.Burst = verifier.DefaultEnrolBurst
	}
	if c.Enrolment.MaxHandshakes == 0 {
		c.Enrolment.MaxHandshakes = verifier.DefaultMaxHandshakes
	}
}

// UseBuiltinEKRoots reports whether the built-in EK CA bundle is trusted
// (EKRootsBuiltin, true unless set to false).
func (c *Config) UseBuiltinEKRoots() bool { return c.EKRootsBuiltin == nil || *c.EKRootsBuiltin }

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	req := func(name, v string) {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	req("tls_cert", c.TLSCert)
	req("tls_key", c.TLSKey)
	req("signing_key", c.SigningKey)
	req("manifest_dir", c.ManifestDir)
	if c.UpdateURL != "" {
		if u, err := url.Parse(c.UpdateURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("update_url %q: want https://host/path (nodes fetch <update_url>/<build>/system.img)", c.UpdateURL))
		}
		if c.UpdateDir == "" {
			errs = append(errs, errors.New("update_url needs update_dir: the verifier checks each build's files there before a node fetches them"))
		}
	}
	if len(c.ManifestKeys) == 0 {
		errs = append(errs, errors.New("manifest_keys needs at least one key"))
	}
	for _, p := range c.PCRs {
		if p < 0 || p > 23 {
			errs = append(errs, fmt.Errorf("pcrs: %d is not a PCR", p))
		}
	}
	if len(c.PCRs) > 0 {
		for _, p := range append(slices.Clone(attestation.LoggedPCRs), measure.RuntimePCR) {
			if !slices.Contains(c.PCRs, p) {
				errs = append(errs, fmt.Errorf("pcrs: PCR %d is needed by the appraisal policy", p))
			}
		}
	}
	s := c.SpotCheck
	if s.Min > s.Max {
		errs = append(errs, fmt.Errorf("spot_check: min %s exceeds max %s", s.Min.D(), s.Max.D()))
	}
	if s.Mean <= 0 || s.Deadline <= 0 {
		errs = append(errs, errors.New("spot_check: mean and deadline must be positive"))
	}
	if e := c.Enrolment; e.Rate < 0 || e.Burst < 0 || e.MaxHandshakes < 0 {
		errs = append(errs, errors.New("enrolment: rate, burst and max_handshakes must not be negative"))
	}
	if c.RefuseDev && c.AllowDev {
		errs = append(errs, errors.New("refuse_dev and allow_dev contradict each other"))
	}
	if _, err := config.ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
