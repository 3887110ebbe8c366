package storage

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm/clause"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// UpsertInstance registers a client instance, or refreshes it when it registers again. An id
// another group's instance holds with a heartbeat at or after liveSince is refused with
// ErrConflict: one group cannot take over another's live instance; a silent one it may.
func (s *Store) UpsertInstance(ctx context.Context, in retry.Instance, liveSince time.Time) error {
	now := T(time.Now())
	res, err := s.sql.ExecContext(ctx, "UPDATE rh_client_instance SET group_id = ?, executor_url = ?, capacity = ?, max_batch = ?, "+
		"sdk_version = ?, host = ?, heartbeat_at = ? WHERE id = ? AND (group_id = ? OR heartbeat_at < ?)",
		in.GroupID, in.ExecutorURL, in.Capacity, in.MaxBatch, in.SDKVersion, in.Host, now, in.ID, in.GroupID, T(liveSince))
	if err != nil {
		return fmt.Errorf("register instance %s: %w", in.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("register instance %s: %w", in.ID, err)
	} else if n > 0 {
		return nil
	}
	row := instanceRow{ID: in.ID, GroupID: in.GroupID, ExecutorURL: in.ExecutorURL, Capacity: in.Capacity, MaxBatch: in.MaxBatch,
		SDKVersion: in.SDKVersion, Host: in.Host, StartedAt: now, HeartbeatAt: now}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		if s.d.isDuplicate(err) {
			return fmt.Errorf("instance id %s is in use by a live instance of another group: %w", in.ID, ErrConflict)
		}
		return fmt.Errorf("register instance %s: %w", in.ID, err)
	}
	return nil
}

// HeartbeatInstance refreshes an instance of the group with the calls it is running; it
// returns ErrNotFound when the instance is not registered (it expired or never registered).
func (s *Store) HeartbeatInstance(ctx context.Context, groupID int64, id string, inFlight int) error {
	res := s.db.WithContext(ctx).Model(&instanceRow{}).Where("id = ? AND group_id = ?", id, groupID).
		Updates(map[string]any{"heartbeat_at": T(time.Now()), "in_flight": max(inFlight, 0)})
	if res.Error != nil {
		return fmt.Errorf("heartbeat instance %s: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("instance %s: %w", id, ErrNotFound)
	}
	return nil
}

// DeleteInstance removes an instance of the group.
func (s *Store) DeleteInstance(ctx context.Context, groupID int64, id string) error {
	if err := s.db.WithContext(ctx).Where("id = ? AND group_id = ?", id, groupID).Delete(&instanceRow{}).Error; err != nil {
		return fmt.Errorf("deregister instance %s: %w", id, err)
	}
	return nil
}

// LiveInstances returns the instances with a heartbeat at or after since.
func (s *Store) LiveInstances(ctx context.Context, since time.Time) ([]retry.Instance, error) {
	var rows []instanceRow
	if err := s.db.WithContext(ctx).Where("heartbeat_at >= ?", T(since)).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list live instances: %w", err)
	}
	out := make([]retry.Instance, len(rows))
	for i, r := range rows {
		out[i] = retry.Instance{ID: r.ID, GroupID: r.GroupID, ExecutorURL: r.ExecutorURL, Capacity: r.Capacity, MaxBatch: r.MaxBatch,
			SDKVersion: r.SDKVersion, Host: r.Host, StartedAt: r.StartedAt.Time, HeartbeatAt: r.HeartbeatAt.Time}
	}
	return out, nil
}

// DeleteInstancesBefore removes instances whose last heartbeat is older than before.
func (s *Store) DeleteInstancesBefore(ctx context.Context, before time.Time) (int64, error) {
	res := s.db.WithContext(ctx).Where("heartbeat_at < ?", T(before)).Delete(&instanceRow{})
	if res.Error != nil {
		return 0, fmt.Errorf("delete expired instances: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// HeartbeatNode records that a server node is alive, registering it on first call.
func (s *Store) HeartbeatNode(ctx context.Context, n retry.Node) error {
	now := T(time.Now())
	row := nodeRow{ID: n.ID, Address: n.Address, Version: n.Version, StartedAt: T(n.StartedAt), HeartbeatAt: now}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "id"}},
		DoUpdates: clause.AssignmentColumns([]string{"address", "version", "heartbeat_at"}),
	}).Create(&row).Error
	if err != nil {
		return fmt.Errorf("heartbeat node %s: %w", n.ID, err)
	}
	return nil
}

// DeleteNode removes a node leaving the cluster.
func (s *Store) DeleteNode(ctx context.Context, id string) error {
	if err := s.db.WithContext(ctx).Where("id = ?", id).Delete(&nodeRow{}).Error; err != nil {
		return fmt.Errorf("delete node %s: %w", id, err)
	}
	return nil
}

// LiveNodes returns the nodes with a heartbeat at or after since, by id.
func (s *Store) LiveNodes(ctx context.Context, since time.Time) ([]retry.Node, error) {
	var rows []nodeRow
	if err := s.db.WithContext(ctx).Where("heartbeat_at >= ?", T(since)).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list live nodes: %w", err)
	}
	out := make([]retry.Node, len(rows))
	for i, r := range rows {
		out[i] = retry.Node{ID: r.ID, Address: r.Address, Version: r.Version, StartedAt: r.StartedAt.Time,
			HeartbeatAt: r.HeartbeatAt.Time}
	}
	return out, nil
}

// DeleteNodesBefore removes nodes whose last heartbeat is older than before.
func (s *Store) DeleteNodesBefore(ctx context.Context, before time.Time) error {
	if err := s.db.WithContext(ctx).Where("heartbeat_at < ?", T(before)).Delete(&nodeRow{}).Error; err != nil {
		return fmt.Errorf("delete dead nodes: %w", err)
	}
	return nil
}

// AcquireBuckets takes or renews the leases of the given buckets for node until expires, where
// each is free, expired at now, or already the node's. It returns the buckets the node holds
// afterwards (of all buckets, not only those asked for).
func (s *Store) AcquireBuckets(ctx context.Context, node string, buckets []int, now, expires time.Time) ([]int, error) {
	if len(buckets) > 0 {
		q := "UPDATE rh_bucket_lease SET node_id = ?, expires_at = ? WHERE bucket IN (" + intList(buckets) +
			") AND (node_id = ? OR node_id = '' OR expires_at < ?)"
		if _, err := s.sql.ExecContext(ctx, q, node, T(expires), node, T(now)); err != nil {
			return nil, fmt.Errorf("acquire buckets for %s: %w", node, err)
		}
	}
	return s.HeldBuckets(ctx, node, now)
}

// ReleaseBuckets gives up the node's leases of the given buckets (all of them when buckets is
// nil), so other nodes may take them at once.
func (s *Store) ReleaseBuckets(ctx context.Context, node string, buckets []int) error {
	q := "UPDATE rh_bucket_lease SET node_id = '', expires_at = ? WHERE node_id = ?"
	if buckets != nil {
		if len(buckets) == 0 {
			return nil
		}
		q += " AND bucket IN (" + intList(buckets) + ")"
	}
	if _, err := s.sql.ExecContext(ctx, q, T(time.Unix(0, 0)), node); err != nil {
		return fmt.Errorf("release buckets of %s: %w", node, err)
	}
	return nil
}

// HeldBuckets returns the buckets whose unexpired lease the node holds, in order.
func (s *Store) HeldBuckets(ctx context.Context, node string, now time.Time) ([]int, error) {
	rows, err := s.sql.QueryContext(ctx,
		"SELECT bucket FROM rh_bucket_lease WHERE node_id = ? AND expires_at > ? ORDER BY bucket", node, T(now))
	if err != nil {
		return nil, fmt.Errorf("read buckets of %s: %w", node, err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var b int
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("read buckets of %s: %w", node, err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// Lease is one bucket's lease.
type Lease struct {
	Bucket    int
	NodeID    string
	ExpiresAt time.Time
}

// Leases returns every bucket's lease, by bucket.
func (s *Store) Leases(ctx context.Context) ([]Lease, error) {
	var rows []leaseRow
	if err := s.db.WithContext(ctx).Order("bucket").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list bucket leases: %w", err)
	}
	out := make([]Lease, len(rows))
	for i, r := range rows {
		out[i] = Lease{Bucket: r.Bucket, NodeID: r.NodeID, ExpiresAt: r.ExpiresAt.Time}
	}
	return out, nil
}
