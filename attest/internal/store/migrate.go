package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrSchemaTooNew reports a database whose schema version is newer than
// this code knows: a newer release wrote it. Opening it changes nothing.
var ErrSchemaTooNew = errors.New("database schema is newer than this release knows")

// A migration moves the schema from one version to the next. The schema
// version is SQLite's user_version: the number of migrations applied.
type migration struct {
	name string
	// stmts run in one transaction with the version bump.
	stmts []string
}

// migrations is the schema, in order. Never edit an entry that has been
// released: append a new one (the next column is one more entry).
var migrations = []migration{
	{
		name: "nodes and verdicts",
		stmts: []string{`CREATE TABLE nodes (
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
	last_clock TEXT
)`, `CREATE TABLE verdicts (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	node TEXT NOT NULL REFERENCES nodes(id),
	time INTEGER NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	manifest TEXT NOT NULL
)`,
			`CREATE INDEX verdicts_node ON verdicts(node, seq)`,
		},
	},
	{
		name: "GPU pinning and workload events",
		stmts: []string{
			`ALTER TABLE nodes ADD COLUMN gpu_digest TEXT NOT NULL DEFAULT ''`,
			`CREATE TABLE verdict_workloads (
	verdict INTEGER NOT NULL REFERENCES verdicts(seq),
	workload TEXT NOT NULL
)`,
			`CREATE INDEX verdict_workloads_verdict ON verdict_workloads(verdict)`,
			`CREATE TABLE workload_events (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	node TEXT NOT NULL REFERENCES nodes(id),
	workload TEXT NOT NULL,
	time INTEGER NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	exit_code INTEGER NOT NULL,
	oom_killed INTEGER NOT NULL,
	image_digest TEXT NOT NULL
)`,
			`CREATE INDEX workload_events_node ON workload_events(node, seq)`,
		},
	},
	{
		name:  "workload events by workload",
		stmts: []string{`CREATE INDEX workload_events_workload ON workload_events(node, workload)`},
	},
	{
		name:  "runtime checkpoints",
		stmts: []string{`ALTER TABLE nodes ADD COLUMN runtime_checkpoints TEXT NOT NULL DEFAULT '[]'`},
	},
	{
		name: "rollouts",
		stmts: []string{`CREATE TABLE rollouts (
	build TEXT PRIMARY KEY,
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	parallel INTEGER NOT NULL,
	max_failed_percent INTEGER NOT NULL,
	force INTEGER NOT NULL,
	fetch INTEGER NOT NULL
)`, `CREATE TABLE rollout_nodes (
	build TEXT NOT NULL REFERENCES rollouts(build),
	node TEXT NOT NULL REFERENCES nodes(id),
	position INTEGER NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL,
	updated INTEGER NOT NULL,
	PRIMARY KEY (build, node)
)`, `CREATE TABLE update_events (
	node TEXT PRIMARY KEY REFERENCES nodes(id),
	time INTEGER NOT NULL,
	event BLOB NOT NULL
)`},
	},
}

// unversioned is the number of migrations the releases before schema
// versions knew. Those releases created whatever was missing on every
// open; a database they wrote (user_version 0, not empty) is adopted the
// same way, then carries this version.
const unversioned = 4

// schemaVersion is the version this code writes and reads.
var schemaVersion = len(migrations)

// migrate brings the schema of db up to schemaVersion, one migration per
// transaction. db must begin its transactions IMMEDIATE, so that two
// processes opening one file cannot both apply a step. A database newer
// than schemaVersion is refused untouched.
func migrate(ctx context.Context, db *sql.DB) error {
	for {
		done, err := migrateStep(ctx, db)
		if err != nil || done {
			return err
		}
	}
}

// migrateStep applies the next migration in its own transaction,
// reporting done when the schema is current.
func migrateStep(ctx context.Context, db *sql.DB) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	v, err := userVersion(ctx, tx)
	if err != nil {
		return false, err
	}
	switch {
	case v > schemaVersion:
		return false, fmt.Errorf("schema version %d, this release knows up to %d (run the release that wrote it, or a newer one; the file is unchanged): %w",
			v, schemaVersion, ErrSchemaTooNew)
	case v == schemaVersion:
		return true, nil
	}
	empty := true
	if v == 0 {
		if empty, err = isEmpty(ctx, tx); err != nil {
			return false, err
		}
	}
	if !empty {
		if err := adopt(ctx, tx); err != nil {
			return false, fmt.Errorf("upgrading a database without a schema version: %w", err)
		}
		v = unversioned
	} else {
		m := migrations[v]
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return false, fmt.Errorf("migration %d (%s): %w", v+1, m.name, err)
			}
		}
		v++
	}
	// PRAGMA takes no parameters; v is an int.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		return false, fmt.Errorf("recording schema version %d: %w", v, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("committing schema version %d: %w", v, err)
	}
	return v == schemaVersion, nil
}

func userVersion(ctx context.Context, tx *sql.Tx) (int, error) {
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}

func isEmpty(ctx context.Context, tx *sql.Tx) (bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM sqlite_master").Scan(&n); err != nil {
		return false, fmt.Errorf("reading schema: %w", err)
	}
	return n == 0, nil
}

// adopt does what the releases before schema versions did on every open:
// it applies the first unversioned migrations, creating each table and
// index that is missing and adding each missing column. Statements other
// than CREATE TABLE, CREATE INDEX and ALTER TABLE ADD COLUMN cannot be
// adopted (none of those migrations has any).
func adopt(ctx context.Context, tx *sql.Tx) error {
	for i, m := range migrations[:unversioned] {
		for _, stmt := range m.stmts {
			if err := ensure(ctx, tx, stmt); err != nil {
				return fmt.Errorf("migration %d (%s): %w", i+1, m.name, err)
			}
		}
	}
	return nil
}

// addColumn matches "ALTER TABLE table ADD COLUMN column ...".
var addColumn = regexp.MustCompile(`^ALTER TABLE (\w+) ADD COLUMN (\w+) `)

// ensure runs stmt unless what it creates is already there.
func ensure(ctx context.Context, tx *sql.Tx, stmt string) error {
	if m := addColumn.FindStringSubmatch(stmt); m != nil {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, m[1], m[2]).Scan(&n); err != nil {
			return fmt.Errorf("reading columns of %s: %w", m[1], err)
		}
		if n > 0 {
			return nil
		}
	} else if rest, ok := strings.CutPrefix(stmt, "CREATE TABLE "); ok {
		stmt = "CREATE TABLE IF NOT EXISTS " + rest
	} else if rest, ok := strings.CutPrefix(stmt, "CREATE INDEX "); ok {
		stmt = "CREATE INDEX IF NOT EXISTS " + rest
	} else {
		return fmt.Errorf("cannot apply %.40q to an existing schema", stmt)
	}
	_, err := tx.ExecContext(ctx, stmt)
	return err
}
