package consoleapi

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Defaults of the liveness windows when Params leaves them 0 (the configuration's defaults).
const (
	defaultInstanceTTL = 30 * time.Second
	defaultNodeTTL     = 10 * time.Second
)

// ClientInstance is a registered instance of a group's business service.
type ClientInstance struct {
	ID          string    `json:"id"`
	NamespaceID int64     `json:"namespace_id"`
	Namespace   string    `json:"namespace"`
	GroupID     int64     `json:"group_id"`
	Group       string    `json:"group"`
	ExecutorURL string    `json:"executor_url" doc:"where the server sends this instance's replays and callbacks"`
	Host        string    `json:"host"`
	SDKVersion  string    `json:"sdk_version"`
	Capacity    int       `json:"capacity" doc:"calls the instance takes at once"`
	InFlight    int       `json:"in_flight" doc:"replays and callbacks it was running at its last heartbeat"`
	StartedAt   time.Time `json:"started_at" doc:"when it first registered"`
	HeartbeatAt time.Time `json:"heartbeat_at" doc:"its last heartbeat"`
	Live        bool      `json:"live" doc:"whether its last heartbeat is within dispatch.instance_ttl: only live instances are sent work"`
}

// ListInstancesInput filters client instances and pages them by id.
type ListInstancesInput struct {
	NamespaceID int64  `query:"namespace_id" minimum:"0" doc:"only this namespace's instances"`
	GroupID     int64  `query:"group_id" minimum:"0" doc:"only this group's instances"`
	After       string `query:"after" maxLength:"64" doc:"the next_after of the page before"`
	Limit       int    `query:"limit" minimum:"1" maximum:"500" default:"100"`
}

// InstanceList is a page of client instances.
type InstanceList struct {
	Body struct {
		Items     []ClientInstance `json:"items"`
		NextAfter string           `json:"next_after" doc:"pass as after for the next page; empty when there is none"`
	}
}

// ServerNode is a node of the retryhub cluster.
type ServerNode struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`
	Version     string    `json:"version"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at" doc:"its last heartbeat"`
	Live        bool      `json:"live" doc:"whether its last heartbeat is within scheduler.node_ttl"`
	Leader      bool      `json:"leader" doc:"whether it holds the leadership of the singleton work (retention, un-holding, summary roll-up)"`
	Buckets     []int     `json:"buckets" doc:"the buckets whose unexpired lease it holds"`
}

// NodeList is every server node.
type NodeList struct {
	Body struct {
		Items []ServerNode `json:"items"`
	}
}

func (a *API) registerCluster() {
	query(a, huma.Operation{OperationID: "instances-list", Method: http.MethodGet, Path: Prefix + "/instances",
		Summary: "List client instances", Description: "The registered instances of the namespaces the caller may read, " +
			"by id, a page at a time. Needs viewer of the namespace.",
		Tags: []string{"cluster"}, Security: security, Errors: []int{400, 401, 403}}, a.listInstances)
	query(a, huma.Operation{OperationID: "nodes-list", Method: http.MethodGet, Path: Prefix + "/nodes",
		Summary: "List server nodes", Description: "Every server node with its buckets and which one leads. Needs a signed-in caller.",
		Tags: []string{"cluster"}, Security: security, Errors: []int{401}}, a.listNodes)
}

// readable is the namespaces the caller may read, as a storage filter: nil for every one.
func readable(ctx context.Context, namespaceID int64) ([]int64, error) {
	if namespaceID != 0 {
		if _, err := auth.Require(ctx, namespaceID, auth.Viewer); err != nil {
			return nil, err
		}
		return []int64{namespaceID}, nil
	}
	p := auth.From(ctx)
	if p == nil {
		return nil, auth.ErrUnauthenticated
	}
	ids, all := p.Namespaces(auth.Viewer)
	if all {
		return nil, nil
	}
	if ids == nil {
		ids = []int64{}
	}
	return ids, nil
}

func (a *API) listInstances(ctx context.Context, in *ListInstancesInput) (*InstanceList, error) {
	ns, err := readable(ctx, in.NamespaceID)
	if err != nil {
		return nil, err
	}
	list, err := a.store.ListInstances(ctx, storage.InstanceFilter{NamespaceIDs: ns, GroupID: in.GroupID}, in.After, in.Limit)
	if err != nil {
		return nil, err
	}
	liveSince := time.Now().Add(-a.instanceTTL)
	out := &InstanceList{}
	out.Body.Items = make([]ClientInstance, len(list))
	for i, x := range list {
		out.Body.Items[i] = ClientInstance{ID: x.ID, NamespaceID: x.NamespaceID, Namespace: x.Namespace, GroupID: x.GroupID,
			Group: x.Group, ExecutorURL: x.ExecutorURL, Host: x.Host, SDKVersion: x.SDKVersion, Capacity: x.Capacity,
			InFlight: x.InFlight, StartedAt: x.StartedAt, HeartbeatAt: x.HeartbeatAt, Live: !x.HeartbeatAt.Before(liveSince)}
	}
	if len(list) == in.Limit {
		out.Body.NextAfter = list[len(list)-1].ID
	}
	return out, nil
}

func (a *API) listNodes(ctx context.Context, _ *struct{}) (*NodeList, error) {
	if auth.From(ctx) == nil {
		return nil, auth.ErrUnauthenticated
	}
	now := time.Now()
	nodes, err := a.store.Nodes(ctx, now)
	if err != nil {
		return nil, err
	}
	leader, until, err := a.store.Leader(ctx, scheduler.LeaderName)
	if err != nil {
		return nil, err
	}
	out := &NodeList{}
	out.Body.Items = make([]ServerNode, len(nodes))
	for i, n := range nodes {
		b := n.Buckets
		if b == nil {
			b = []int{}
		}
		out.Body.Items[i] = ServerNode{ID: n.ID, Address: n.Address, Version: n.Version, StartedAt: n.StartedAt,
			HeartbeatAt: n.HeartbeatAt, Live: !n.HeartbeatAt.Before(now.Add(-a.nodeTTL)),
			Leader: n.ID == leader && until.After(now), Buckets: b}
	}
	return out, nil
}
