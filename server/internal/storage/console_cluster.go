package storage

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// InstanceFilter selects client instances for the console.
type InstanceFilter struct {
	// NamespaceIDs limits the list to these namespaces; nil means every namespace, an empty
	// non-nil slice none.
	NamespaceIDs []int64
	// GroupID, when not 0, narrows it to one group.
	GroupID int64
}

// InstanceInfo is a client instance with its group and namespace.
type InstanceInfo struct {
	ID          string
	GroupID     int64
	Group       string
	NamespaceID int64
	Namespace   string
	ExecutorURL string
	Capacity    int
	InFlight    int // at its last heartbeat
	SDKVersion  string
	Host        string
	StartedAt   time.Time
	HeartbeatAt time.Time
}

// ListInstances returns up to limit client instances the filter selects whose id is after
// after, by id (rows whose heartbeat expired stay listed until the janitor removes them).
func (s *Store) ListInstances(ctx context.Context, f InstanceFilter, after string, limit int) ([]InstanceInfo, error) {
	if f.NamespaceIDs != nil && len(f.NamespaceIDs) == 0 {
		return nil, nil
	}
	q := "SELECT i.id, i.group_id, g.name, g.namespace_id, n.name, i.executor_url, i.capacity, i.in_flight, i.sdk_version, i.host, " +
		"i.started_at, i.heartbeat_at FROM rh_client_instance i JOIN rh_group g ON g.id = i.group_id " +
		"JOIN rh_namespace n ON n.id = g.namespace_id WHERE i.id > ?"
	args := []any{after}
	if f.NamespaceIDs != nil {
		q += " AND g.namespace_id IN (" + placeholders(len(f.NamespaceIDs)) + ")"
		for _, id := range f.NamespaceIDs {
			args = append(args, id)
		}
	}
	if f.GroupID != 0 {
		q += " AND i.group_id = ?"
		args = append(args, f.GroupID)
	}
	q += " ORDER BY i.id LIMIT ?"
	args = append(args, limit)
	rows, err := s.sql.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	defer rows.Close()
	var out []InstanceInfo
	for rows.Next() {
		var in InstanceInfo
		var started, beat Time
		if err := rows.Scan(&in.ID, &in.GroupID, &in.Group, &in.NamespaceID, &in.Namespace, &in.ExecutorURL,
			&in.Capacity, &in.InFlight, &in.SDKVersion, &in.Host, &started, &beat); err != nil {
			return nil, fmt.Errorf("list instances: %w", err)
		}
		in.StartedAt, in.HeartbeatAt = started.Time, beat.Time
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return out, nil
}

// NodeInfo is a server node with the buckets whose unexpired lease it holds.
type NodeInfo struct {
	ID          string
	Address     string
	Version     string
	StartedAt   time.Time
	HeartbeatAt time.Time
	Buckets     []int
}

// Nodes returns every registered server node by id, each with the buckets it leases at now.
func (s *Store) Nodes(ctx context.Context, now time.Time) ([]NodeInfo, error) {
	var rows []nodeRow
	if err := s.db.WithContext(ctx).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	leases, err := s.Leases(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string][]int{}
	for _, l := range leases {
		if l.NodeID != "" && l.ExpiresAt.After(now) {
			held[l.NodeID] = append(held[l.NodeID], l.Bucket)
		}
	}
	out := make([]NodeInfo, len(rows))
	for i, r := range rows {
		b := held[r.ID]
		sort.Ints(b)
		out[i] = NodeInfo{ID: r.ID, Address: r.Address, Version: r.Version, StartedAt: r.StartedAt.Time,
			HeartbeatAt: r.HeartbeatAt.Time, Buckets: b}
	}
	return out, nil
}
