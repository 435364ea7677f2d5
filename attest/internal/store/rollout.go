package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SaveRollout implements Store.
func (s *SQLite) SaveRollout(ctx context.Context, r *Rollout) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (build, created, updated, state, reason, parallel, max_failed_percent, force, fetch)
		VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (build) DO UPDATE SET updated = excluded.updated, state = excluded.state,
		reason = excluded.reason, parallel = excluded.parallel, max_failed_percent = excluded.max_failed_percent,
		force = excluded.force, fetch = excluded.fetch`,
		r.Build, ms(r.Created), ms(r.Updated), r.State, r.Reason, r.Parallel, r.MaxFailedPercent, r.Force, r.Fetch); err != nil {
		return fmt.Errorf("saving the rollout of %s: %w", r.Build, err)
	}
	for _, n := range r.Nodes {
		if err := saveRolloutNode(ctx, tx, r.Build, n); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// SaveRolloutNode implements Store.
func (s *SQLite) SaveRolloutNode(ctx context.Context, build string, n RolloutNode) error {
	return saveRolloutNode(ctx, s.db, build, n)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func saveRolloutNode(ctx context.Context, db execer, build string, n RolloutNode) error {
	if _, err := db.ExecContext(ctx, `INSERT INTO rollout_nodes (build, node, position, state, reason, updated) VALUES (?,?,?,?,?,?)
		ON CONFLICT (build, node) DO UPDATE SET state = excluded.state, reason = excluded.reason, updated = excluded.updated`,
		build, n.Node, n.Position, n.State, n.Reason, ms(n.Updated)); err != nil {
		return fmt.Errorf("saving node %s of the rollout of %s: %w", n.Node, build, err)
	}
	return nil
}

// Rollouts implements Store.
func (s *SQLite) Rollouts(ctx context.Context) ([]*Rollout, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT build, created, updated, state, reason, parallel, max_failed_percent, force, fetch
		FROM rollouts ORDER BY created DESC, build`)
	if err != nil {
		return nil, err
	}
	var out []*Rollout
	byBuild := map[string]*Rollout{}
	for rows.Next() {
		r := &Rollout{}
		var created, updated int64
		if err := rows.Scan(&r.Build, &created, &updated, &r.State, &r.Reason, &r.Parallel, &r.MaxFailedPercent, &r.Force, &r.Fetch); err != nil {
			rows.Close()
			return nil, err
		}
		r.Created, r.Updated = fromMS(created), fromMS(updated)
		out = append(out, r)
		byBuild[r.Build] = r
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT build, node, position, state, reason, updated FROM rollout_nodes ORDER BY build, position`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var build string
		var n RolloutNode
		var updated int64
		if err := rows.Scan(&build, &n.Node, &n.Position, &n.State, &n.Reason, &updated); err != nil {
			return nil, err
		}
		n.Updated = fromMS(updated)
		if r := byBuild[build]; r != nil {
			r.Nodes = append(r.Nodes, n)
		}
	}
	return out, rows.Err()
}

// SaveUpdateEvent implements Store.
func (s *SQLite) SaveUpdateEvent(ctx context.Context, node string, t time.Time, event []byte) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO update_events (node, time, event) VALUES (?,?,?)
		ON CONFLICT (node) DO UPDATE SET time = excluded.time, event = excluded.event`, node, ms(t), event); err != nil {
		return fmt.Errorf("saving the update event of %s: %w", node, err)
	}
	return nil
}

// LastUpdateEvent implements Store.
func (s *SQLite) LastUpdateEvent(ctx context.Context, node string) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, `SELECT event FROM update_events WHERE node = ?`, node).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return b, err
}
