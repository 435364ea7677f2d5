package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rigos/rigos/pkg/attestation"
)

// The schemas releases wrote before the version was recorded, copied from
// those releases (CREATE statements only; they ran with IF NOT EXISTS).
const (
	oldNodesTable = `CREATE TABLE nodes (
	id TEXT PRIMARY KEY,
	ek_fingerprint TEXT NOT NULL UNIQUE,
	ek_public BLOB NOT NULL,
	ak_public BLOB NOT NULL,
	class TEXT NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	trusted_until INTEGER NOT NULL DEFAULT 0,
	enrolled INTEGER NOT NULL,
	last_verdict INTEGER NOT NULL DEFAULT 0,
	appraisals INTEGER NOT NULL DEFAULT 0,
	firmware_pcrs TEXT,
	repin_firmware INTEGER NOT NULL DEFAULT 0,
	revoked INTEGER NOT NULL DEFAULT 0,
	last_clock TEXT`
	oldVerdicts = `
CREATE TABLE verdicts (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	node TEXT NOT NULL REFERENCES nodes(id),
	time INTEGER NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	manifest TEXT NOT NULL
);
CREATE INDEX verdicts_node ON verdicts(node, seq);`
	oldWorkloads = `
CREATE TABLE verdict_workloads (
	verdict INTEGER NOT NULL REFERENCES verdicts(seq),
	workload TEXT NOT NULL
);
CREATE INDEX verdict_workloads_verdict ON verdict_workloads(verdict);
CREATE TABLE workload_events (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	node TEXT NOT NULL REFERENCES nodes(id),
	workload TEXT NOT NULL,
	time INTEGER NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	exit_code INTEGER NOT NULL,
	oom_killed INTEGER NOT NULL,
	image_digest TEXT NOT NULL
);
CREATE INDEX workload_events_node ON workload_events(node, seq);`
	oldWorkloadIndex = `
CREATE INDEX workload_events_workload ON workload_events(node, workload);`

	// The first release: nodes and verdicts.
	schemaVerifier = oldNodesTable + "\n);" + oldVerdicts
	// The first release's database after the next one opened it: its
	// migrate() added gpu_digest, its schema the workload tables.
	schemaVerifierUpgraded = schemaVerifier + oldWorkloads +
		"\nALTER TABLE nodes ADD COLUMN gpu_digest TEXT NOT NULL DEFAULT '';"
	// Trusted-tier workloads: GPU pinning, verdict workloads, events.
	schemaWorkloads = oldNodesTable + ",\n\tgpu_digest TEXT NOT NULL DEFAULT ''\n);" + oldVerdicts + oldWorkloads
	// Verifier hardening: events looked up by workload.
	schemaEventIndex = schemaWorkloads + oldWorkloadIndex
	// Runtime-log checkpoints, the last schema without a version.
	schemaCheckpoints = oldNodesTable + ",\n\tgpu_digest TEXT NOT NULL DEFAULT '',\n\truntime_checkpoints TEXT NOT NULL DEFAULT '[]'\n);" +
		oldVerdicts + oldWorkloads + oldWorkloadIndex
)

// Each schema an unversioned release left behind upgrades to the current
// one, keeps its rows and records the current version; opening again
// changes nothing.
func TestMigratesUnversionedDatabases(t *testing.T) {
	ctx := context.Background()
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	s, err := OpenSQLite(fresh)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	want := dumpSchema(t, fresh)

	for _, tc := range []struct {
		name, schema string
		gpu, cps     bool // columns the old schema has
		workloads    bool // tables the old schema has
	}{
		{"verifier", schemaVerifier, false, false, false},
		{"verifier upgraded", schemaVerifierUpgraded, true, false, true},
		{"workloads", schemaWorkloads, true, false, true},
		{"event index", schemaEventIndex, true, false, true},
		{"checkpoints", schemaCheckpoints, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "old.db")
			cols, vals := "id, ek_fingerprint, ek_public, ak_public, class, state, reason, trusted_until, enrolled, appraisals, firmware_pcrs, last_clock",
				`'rig-1', 'ek1', x'01', x'02', 'dev', 'trusted', 'ok', 1800000060000, 1800000000000, 3, '{"0":"CQ=="}', '{"Clock":5,"ResetCount":1,"RestartCount":0,"Safe":false}'`
			if tc.gpu {
				cols, vals = cols+", gpu_digest", vals+", 'none'"
			}
			if tc.cps {
				cols, vals = cols+", runtime_checkpoints", vals+`, '["AQI="]'`
			}
			stmts := tc.schema + "\nINSERT INTO nodes (" + cols + ") VALUES (" + vals + ");" +
				"\nINSERT INTO verdicts (node, time, state, reason, manifest) VALUES ('rig-1', 1800000000000, 'trusted', 'ok', 'b1');"
			if tc.workloads {
				stmts += "\nINSERT INTO verdict_workloads (verdict, workload) VALUES (1, 'w1@sha256:aa');" +
					"\nINSERT INTO workload_events (node, workload, time, state, reason, exit_code, oom_killed, image_digest) VALUES ('rig-1', 'w1', 1800000000000, 'running', '', 0, 0, 'sha256:aa');"
			}
			execRaw(t, path, stmts)

			s, err := OpenSQLite(path)
			if err != nil {
				t.Fatalf("OpenSQLite(%s schema) = %v", tc.name, err)
			}
			now := time.UnixMilli(1_800_000_000_000)
			wantNode := &Node{ID: "rig-1", EKFingerprint: "ek1", EKPublic: []byte{1}, AKPublic: []byte{2},
				Class: attestation.ClassDev, State: st("trusted"), Reason: "ok", TrustedUntil: now.Add(time.Minute),
				Enrolled: now, Appraisals: 3, FirmwarePCRs: map[int][]byte{0: {9}},
				LastClock: &attestation.Clock{Clock: 5, ResetCount: 1}}
			wantVerdict := Verdict{Node: "rig-1", Time: now, State: st("trusted"), Reason: "ok", Manifest: "b1"}
			var wantEvents []WorkloadEvent
			if tc.gpu {
				wantNode.GPUDigest = "none"
			}
			if tc.cps {
				wantNode.RuntimeCheckpoints = [][]byte{{1, 2}}
			}
			if tc.workloads {
				wantVerdict.Workloads = []string{"w1@sha256:aa"}
				wantEvents = []WorkloadEvent{{Node: "rig-1", Workload: "w1", Time: now, State: "running", ImageDigest: "sha256:aa"}}
			}
			n, err := s.GetNode(ctx, "rig-1")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantNode, n); diff != "" {
				t.Errorf("node after upgrade (-want +got):\n%s", diff)
			}
			h, err := s.History(ctx, "rig-1", 10)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]Verdict{wantVerdict}, h); diff != "" {
				t.Errorf("History after upgrade (-want +got):\n%s", diff)
			}
			ev, err := s.WorkloadEvents(ctx, "rig-1", 10)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantEvents, ev); diff != "" {
				t.Errorf("WorkloadEvents after upgrade (-want +got):\n%s", diff)
			}
			// The upgraded database takes the current columns.
			n.RuntimeCheckpoints = [][]byte{{3}}
			if err := s.SaveVerdict(ctx, n, Verdict{Node: "rig-1", Time: now, State: st("trusted"), Workloads: []string{"w2"}}); err != nil {
				t.Fatalf("SaveVerdict after upgrade: %v", err)
			}
			s.Close()

			got := dumpSchema(t, path)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("schema after upgrade differs from a new database's (-new +upgraded):\n%s", diff)
			}
			s, err = OpenSQLite(path)
			if err != nil {
				t.Fatalf("second OpenSQLite = %v", err)
			}
			s.Close()
			if diff := cmp.Diff(got, dumpSchema(t, path)); diff != "" {
				t.Errorf("second open changed the schema (-first +second):\n%s", diff)
			}
		})
	}
}

// A database a newer release wrote is refused, and the file is left as
// it was.
func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "attest.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, &Node{ID: "rig-1", EKFingerprint: "ek1", EKPublic: []byte{1}, AKPublic: []byte{2},
		Class: attestation.ClassDev, State: st("enrolling"), Enrolled: time.UnixMilli(1)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	newer := schemaVersion + 1
	execRaw(t, path, fmt.Sprintf("PRAGMA user_version = %d", newer))
	before := dumpSchema(t, path)

	s, err = OpenSQLite(path)
	if !errors.Is(err, ErrSchemaTooNew) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("OpenSQLite(version %d) = %v, want ErrSchemaTooNew", newer, err)
	}
	for _, part := range []string{path, fmt.Sprintf("schema version %d", newer), fmt.Sprintf("up to %d", schemaVersion), "newer"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("OpenSQLite(version %d) = %q, want it to say %q", newer, err, part)
		}
	}
	if diff := cmp.Diff(before, dumpSchema(t, path)); diff != "" {
		t.Errorf("refused open changed the schema (-before +after):\n%s", diff)
	}
	if v := rawUserVersion(t, path); v != newer {
		t.Errorf("user_version after refused open = %d, want %d", v, newer)
	}

	// Put back by hand, it opens with its data.
	execRaw(t, path, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion))
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetNode(ctx, "rig-1"); err != nil {
		t.Errorf("GetNode after refused open = %v", err)
	}
}

// A migration that fails leaves its whole step undone and the version
// where it was.
func TestFailedMigrationRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attest.db")
	// Version 1 recorded, but a table of step 2 is already there.
	execRaw(t, path, schemaVerifier+
		"\nCREATE TABLE workload_events (x INTEGER);\nPRAGMA user_version = 1;")
	s, err := OpenSQLite(path)
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite succeeded on a schema its next migration cannot apply to")
	}
	if !strings.Contains(err.Error(), "migration 2") {
		t.Errorf("OpenSQLite = %q, want it to name migration 2", err)
	}
	if v := rawUserVersion(t, path); v != 1 {
		t.Errorf("user_version after failed migration = %d, want 1", v)
	}
	schema := dumpSchema(t, path)
	if strings.Contains(schema, "gpu_digest") || strings.Contains(schema, "verdict_workloads") {
		t.Errorf("failed migration left part of its step behind:\n%s", schema)
	}
}

func TestSchemaVersionOfNewDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attest.db")
	for range 2 {
		s, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if v := rawUserVersion(t, path); v != schemaVersion {
			t.Errorf("user_version = %d, want %d", v, schemaVersion)
		}
	}
}

// Openers racing on a new file each see the finished schema: a step is
// applied by one of them, never twice.
func TestConcurrentOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "attest.db")
	errs := make(chan error, 4)
	for range cap(errs) {
		go func() {
			s, err := OpenSQLite(path)
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("concurrent OpenSQLite = %v", err)
		}
	}
	if v := rawUserVersion(t, path); v != schemaVersion {
		t.Errorf("user_version = %d, want %d", v, schemaVersion)
	}
}

// execRaw runs statements on the file at path without this package's
// migrations, as an older release would.
func execRaw(t *testing.T, path, stmts string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmts); err != nil {
		t.Fatalf("preparing %s: %v", path, err)
	}
}

func rawUserVersion(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// dumpSchema describes the tables (every column's name, type, NOT NULL,
// default and key) and indexes of the database at path, independent of
// how each CREATE statement was written.
func dumpSchema(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT m.type, m.name, m.tbl_name,
		COALESCE((SELECT group_concat(c.name || ' ' || c.type || ' ' || c."notnull" || ' ' || COALESCE(c.dflt_value, 'NULL') || ' ' || c.pk, ', ')
			FROM pragma_table_info(m.name) c), ''),
		COALESCE((SELECT group_concat(i.name, ', ') FROM pragma_index_info(m.name) i), '')
		FROM sqlite_master m WHERE m.name NOT LIKE 'sqlite_%' ORDER BY m.type, m.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, name, tbl, cols, idx string
		if err := rows.Scan(&typ, &name, &tbl, &cols, &idx); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s on %s: %s%s\n", typ, name, tbl, cols, idx)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
