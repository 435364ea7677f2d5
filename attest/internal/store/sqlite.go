package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/rigos/rigos/pkg/api/apiv1"
	"github.com/rigos/rigos/pkg/attestation"
)

// SQLite is a Store in one SQLite database file (WAL mode, synchronous
// FULL: an acknowledged write survives a crash).
type SQLite struct {
	db *sql.DB
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed) the database at path and brings
// its schema up to date (see migrations). A database written by a newer
// release is refused with ErrSchemaTooNew and left unchanged.
func OpenSQLite(path string) (*SQLite, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)"
	// Migrations run on their own handle whose transactions take the
	// write lock at BEGIN: reading the version and applying the next step
	// are one atomic act even if another process opens the file.
	mdb, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = migrate(context.Background(), mdb)
	if cerr := mdb.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("schema of %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	// One writer at a time is SQLite's model; a single connection keeps
	// transactions simple and is fast enough (see the load benchmark).
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return &SQLite{db: db}, nil
}

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }

const nodeCols = `id, ek_fingerprint, ek_public, ak_public, class, state, reason, trusted_until, enrolled,
	last_verdict, appraisals, firmware_pcrs, repin_firmware, revoked, last_clock, gpu_digest, runtime_checkpoints`

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

func nullJSON(v any, isNil bool) (sql.NullString, error) {
	if isNil {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(v)
	return sql.NullString{String: string(b), Valid: true}, err
}

func nodeArgs(n *Node) ([]any, error) {
	fw, err := nullJSON(n.FirmwarePCRs, n.FirmwarePCRs == nil)
	if err != nil {
		return nil, err
	}
	clk, err := nullJSON(n.LastClock, n.LastClock == nil)
	if err != nil {
		return nil, err
	}
	cps := n.RuntimeCheckpoints
	if cps == nil {
		cps = [][]byte{}
	}
	cp, err := json.Marshal(cps)
	if err != nil {
		return nil, err
	}
	return []any{n.ID, n.EKFingerprint, n.EKPublic, n.AKPublic, string(n.Class), StateText(n.State), n.Reason,
		ms(n.TrustedUntil), ms(n.Enrolled), ms(n.LastVerdict), int64(n.Appraisals), fw,
		n.RepinFirmware, n.Revoked, clk, n.GPUDigest, string(cp)}, nil
}

// CreateNode implements Store.
func (s *SQLite) CreateNode(ctx context.Context, n *Node) error {
	args, err := nodeArgs(n)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO nodes (`+nodeCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, args...)
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed") {
		return fmt.Errorf("node %s: %w", n.ID, ErrConflict)
	}
	return err
}

type scanner interface{ Scan(...any) error }

func scanNode(r scanner) (*Node, error) {
	var n Node
	var class, state string
	var tu, en, lv, appr int64
	var fw, clk sql.NullString
	var cps string
	if err := r.Scan(&n.ID, &n.EKFingerprint, &n.EKPublic, &n.AKPublic, &class, &state, &n.Reason,
		&tu, &en, &lv, &appr, &fw, &n.RepinFirmware, &n.Revoked, &clk, &n.GPUDigest, &cps); err != nil {
		return nil, err
	}
	var err error
	if n.State, err = ParseState(state); err != nil {
		return nil, fmt.Errorf("node %s: %w", n.ID, err)
	}
	if err := json.Unmarshal([]byte(cps), &n.RuntimeCheckpoints); err != nil {
		return nil, fmt.Errorf("node %s: runtime checkpoints: %w", n.ID, err)
	}
	if len(n.RuntimeCheckpoints) == 0 {
		n.RuntimeCheckpoints = nil
	}
	n.Class, n.TrustedUntil, n.Enrolled, n.LastVerdict = attestation.TrustClass(class), fromMS(tu), fromMS(en), fromMS(lv)
	n.Appraisals = uint64(appr)
	if fw.Valid {
		if err := json.Unmarshal([]byte(fw.String), &n.FirmwarePCRs); err != nil {
			return nil, fmt.Errorf("decoding firmware PCRs of %s: %w", n.ID, err)
		}
	}
	if clk.Valid {
		n.LastClock = new(attestation.Clock)
		if err := json.Unmarshal([]byte(clk.String), n.LastClock); err != nil {
			return nil, fmt.Errorf("decoding clock of %s: %w", n.ID, err)
		}
	}
	return &n, nil
}

func (s *SQLite) getBy(ctx context.Context, col, v string) (*Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM nodes WHERE `+col+` = ?`, v))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("node %s=%s: %w", col, v, ErrNotFound)
	}
	return n, err
}

// GetNode implements Store.
func (s *SQLite) GetNode(ctx context.Context, id string) (*Node, error) {
	return s.getBy(ctx, "id", id)
}

// NodeByEK implements Store.
func (s *SQLite) NodeByEK(ctx context.Context, fp string) (*Node, error) {
	return s.getBy(ctx, "ek_fingerprint", fp)
}

// SaveVerdict implements Store.
func (s *SQLite) SaveVerdict(ctx context.Context, n *Node, v Verdict) error {
	args, err := nodeArgs(n)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE nodes SET ek_fingerprint=?2, ek_public=?3, ak_public=?4, class=?5, state=?6,
		reason=?7, trusted_until=?8, enrolled=?9, last_verdict=?10, appraisals=?11, firmware_pcrs=?12,
		repin_firmware=?13, revoked=?14, last_clock=?15, gpu_digest=?16, runtime_checkpoints=?17 WHERE id=?1`, args...)
	if err != nil {
		return fmt.Errorf("updating node %s: %w", n.ID, err)
	}
	if c, _ := res.RowsAffected(); c != 1 {
		return fmt.Errorf("node %s: %w", n.ID, ErrNotFound)
	}
	res, err = tx.ExecContext(ctx, `INSERT INTO verdicts (node, time, state, reason, manifest) VALUES (?,?,?,?,?)`,
		v.Node, ms(v.Time), StateText(v.State), v.Reason, v.Manifest)
	if err != nil {
		return fmt.Errorf("recording verdict for %s: %w", n.ID, err)
	}
	if len(v.Workloads) > 0 {
		seq, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for _, w := range v.Workloads {
			if _, err := tx.ExecContext(ctx, `INSERT INTO verdict_workloads (verdict, workload) VALUES (?,?)`, seq, w); err != nil {
				return fmt.Errorf("recording verdict workloads for %s: %w", n.ID, err)
			}
		}
	}
	return tx.Commit()
}

// ListNodes implements Store.
func (s *SQLite) ListNodes(ctx context.Context) ([]*Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// History implements Store.
func (s *SQLite) History(ctx context.Context, id string, limit int) ([]Verdict, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT v.node, v.time, v.state, v.reason, v.manifest,
		COALESCE((SELECT group_concat(workload, char(10)) FROM verdict_workloads w WHERE w.verdict = v.seq), '')
		FROM verdicts v WHERE v.node = ? ORDER BY v.seq DESC LIMIT ?`, id, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Verdict
	for rows.Next() {
		var v Verdict
		var t int64
		var w, state string
		if err := rows.Scan(&v.Node, &t, &state, &v.Reason, &v.Manifest, &w); err != nil {
			return nil, err
		}
		if v.State, err = ParseState(state); err != nil {
			return nil, fmt.Errorf("verdict of %s: %w", v.Node, err)
		}
		v.Time = fromMS(t)
		if w != "" {
			v.Workloads = strings.Split(w, "\n")
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DemoteAll implements Store.
func (s *SQLite) DemoteAll(ctx context.Context, fromState, toState apiv1.NodeState, reason string, now time.Time) (int, error) {
	from, to := StateText(fromState), StateText(toState)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO verdicts (node, time, state, reason, manifest)
		SELECT id, ?, ?, ?, '' FROM nodes WHERE state = ?`, ms(now), to, reason, from); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE nodes SET state = ?, reason = ?, trusted_until = 0 WHERE state = ?`, to, reason, from)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), tx.Commit()
}

// SaveWorkloadEvent implements Store.
func (s *SQLite) SaveWorkloadEvent(ctx context.Context, e WorkloadEvent) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO workload_events (node, workload, time, state, reason, exit_code,
		oom_killed, image_digest) VALUES (?,?,?,?,?,?,?,?)`,
		e.Node, e.Workload, ms(e.Time), e.State, e.Reason, e.ExitCode, e.OOMKilled, e.ImageDigest)
	if err != nil {
		return fmt.Errorf("recording workload event for %s: %w", e.Node, err)
	}
	return nil
}

// WorkloadEventCount implements Store.
func (s *SQLite) WorkloadEventCount(ctx context.Context, node, workload string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM workload_events WHERE node = ? AND workload = ?`, node, workload).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting workload events for %s: %w", node, err)
	}
	return n, nil
}

// WorkloadEvents implements Store.
func (s *SQLite) WorkloadEvents(ctx context.Context, node string, limit int) ([]WorkloadEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT node, workload, time, state, reason, exit_code, oom_killed, image_digest
		FROM workload_events WHERE node = ? ORDER BY seq DESC LIMIT ?`, node, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []WorkloadEvent
	for rows.Next() {
		var e WorkloadEvent
		var t int64
		if err := rows.Scan(&e.Node, &e.Workload, &t, &e.State, &e.Reason, &e.ExitCode, &e.OOMKilled, &e.ImageDigest); err != nil {
			return nil, err
		}
		e.Time = fromMS(t)
		out = append(out, e)
	}
	return out, rows.Err()
}
