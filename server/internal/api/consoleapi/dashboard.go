package consoleapi

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Bounds of the dashboard's series.
const (
	defaultDashboardRange = time.Hour
	minuteDashboardRange  = 6 * time.Hour       // longer ranges are answered by the hour
	maxDashboardRange     = 90 * 24 * time.Hour // the longest range
	maxDashboardPoints    = 50000
)

// SummaryCounts are what happened to a scene's tasks in one minute.
type SummaryCounts struct {
	Reported           int64 `json:"reported" doc:"reports received, merged ones included"`
	Merged             int64 `json:"merged" doc:"reports merged into an active task of the same key"`
	Replayed           int64 `json:"replayed" doc:"replay attempts whose result was recorded"`
	Succeeded          int64 `json:"succeeded" doc:"replay attempts that succeeded"`
	Failed             int64 `json:"failed" doc:"replay attempts that failed or timed out"`
	Exhausted          int64 `json:"exhausted" doc:"tasks that became dead letters through a replay's result"`
	CallbacksSucceeded int64 `json:"callbacks_succeeded"`
	CallbacksFailed    int64 `json:"callbacks_failed" doc:"callback attempts that failed or timed out"`
	CallbacksExhausted int64 `json:"callbacks_exhausted" doc:"callbacks that ran out of attempts"`
}

// SummaryPoint is a scene's counts in the minute (or hour) starting at Minute.
type SummaryPoint struct {
	Minute time.Time `json:"minute" doc:"the start of the minute, or of the hour when the resolution is hour"`
	SummaryCounts
}

// SceneSeries is one scene's minutes with events, oldest first.
type SceneSeries struct {
	SceneID     int64          `json:"scene_id"`
	Scene       string         `json:"scene"`
	GroupID     int64          `json:"group_id"`
	Group       string         `json:"group"`
	NamespaceID int64          `json:"namespace_id"`
	Totals      SummaryCounts  `json:"totals" doc:"the sum of the points"`
	Points      []SummaryPoint `json:"points" doc:"minutes without events are left out"`
}

// SceneStates is how many tasks one scene has in each state.
type SceneStates struct {
	SceneID     int64            `json:"scene_id"`
	Scene       string           `json:"scene"`
	GroupID     int64            `json:"group_id"`
	Group       string           `json:"group"`
	NamespaceID int64            `json:"namespace_id"`
	States      map[string]int64 `json:"states" doc:"tasks per state, every state named (zeros included)"`
}

// DashboardInput selects the dashboard's scenes and time range.
type DashboardInput struct {
	NamespaceID int64     `query:"namespace_id" minimum:"0" doc:"only this namespace (default: every namespace the caller may read)"`
	GroupID     int64     `query:"group_id" minimum:"0" doc:"only this group's scenes"`
	SceneID     int64     `query:"scene_id" minimum:"0" doc:"only this scene"`
	From        time.Time `query:"from" doc:"start of the range (RFC 3339; default: an hour before until)"`
	Until       time.Time `query:"until" doc:"end of the range (RFC 3339; default: now); at most 90 days after from. Ranges over 6 hours are answered by the hour"`
}

// Dashboard is the per-minute activity of the scenes.
type Dashboard struct {
	Body struct {
		From        time.Time        `json:"from" doc:"the range's start, at a whole minute (hour)"`
		Until       time.Time        `json:"until"`
		Resolution  string           `json:"resolution" enum:"minute,hour" doc:"minute for ranges up to 6 hours, hour beyond"`
		Series      []SceneSeries    `json:"series" doc:"one per scene with events in the range, by scene id"`
		Truncated   bool             `json:"truncated" doc:"true when the range held more points than one answer carries (50,000): narrow it"`
		States      map[string]int64 `json:"states" doc:"tasks per state now (not within the range), over the scenes the filter selects; every state named, zeros included"`
		SceneStates []SceneStates    `json:"scene_states" doc:"the same per scene that has tasks, by scene id"`
	}
}

func (a *API) registerDashboard() {
	query(a, huma.Operation{OperationID: "dashboard", Method: http.MethodGet, Path: Prefix + "/dashboard",
		Summary: "Per-minute activity per scene, and tasks by state", Description: "Reports, replays and their outcomes, exhaustions and callbacks " +
			"per scene and minute (per hour for ranges over 6 hours), from the summaries the server writes as it ingests and settles (never a count of the tasks); " +
			"and the tasks per state now, in all and per scene, from the totals every change of a task keeps. " +
			"Needs viewer of the namespace; without namespace_id, every namespace the caller may read.",
		Tags: []string{"dashboard"}, Security: security, Errors: []int{400, 401, 403}}, a.dashboard)
	mutation(a, huma.Operation{OperationID: "dashboard-recount", Method: http.MethodPost, Path: Prefix + "/dashboard/recount",
		Summary: "Recount the tasks by state", Description: "Makes the tasks-by-state totals equal to a count of the tasks, exactly, " +
			"while nodes go on working. Needed only after tasks were changed by a node of an earlier version (during an upgrade) or by hand " +
			"in the database. Reads every task once. Needs admin of every namespace.",
		Tags: []string{"dashboard"}, Security: security, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403}}, a.recountStates)
}

func (a *API) recountStates(ctx context.Context, _ *Empty, ch *Change) (*Empty, error) {
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	ch.Target = "task totals by state"
	if err := a.store.RecountStateTotals(ctx); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

// stateNames returns counts by state as an object of every state's name, zeros included.
func stateNames(counts map[retry.State]int64) map[string]int64 {
	out := make(map[string]int64, len(retry.States()))
	for _, st := range retry.States() {
		out[st.String()] = counts[st]
	}
	return out
}

func (a *API) dashboard(ctx context.Context, in *DashboardInput) (*Dashboard, error) {
	ns, err := readable(ctx, in.NamespaceID)
	if err != nil {
		return nil, err
	}
	until := in.Until
	if until.IsZero() {
		until = time.Now()
	}
	from := in.From
	if from.IsZero() {
		from = until.Add(-defaultDashboardRange)
	}
	if !until.After(from) {
		return nil, queryField("until", "must be after from")
	}
	if until.Sub(from) > maxDashboardRange {
		return nil, queryField("from", "the range is at most 90 days")
	}
	hourly := until.Sub(from) > minuteDashboardRange
	if hourly {
		from = from.UTC().Truncate(time.Hour)
	} else {
		from = from.UTC().Truncate(time.Minute)
	}
	points, err := a.store.Summary(ctx, storage.SummaryFilter{NamespaceIDs: ns, GroupID: in.GroupID, SceneID: in.SceneID, From: from,
		Until: until, Hourly: hourly}, maxDashboardPoints+1)
	if err != nil {
		return nil, err
	}
	scenes, err := a.store.StateTotals(ctx, storage.StateFilter{NamespaceIDs: ns, GroupID: in.GroupID, SceneID: in.SceneID})
	if err != nil {
		return nil, err
	}
	out := &Dashboard{}
	out.Body.From, out.Body.Until, out.Body.Resolution = from, until.UTC(), "minute"
	if hourly {
		out.Body.Resolution = "hour"
	}
	if len(points) > maxDashboardPoints {
		points, out.Body.Truncated = points[:maxDashboardPoints], true
	}
	index := map[int64]int{}
	out.Body.Series = []SceneSeries{}
	for _, p := range points {
		i, ok := index[p.SceneID]
		if !ok {
			i = len(out.Body.Series)
			index[p.SceneID] = i
			out.Body.Series = append(out.Body.Series, SceneSeries{SceneID: p.SceneID, Scene: p.Scene, GroupID: p.GroupID,
				Group: p.Group, NamespaceID: p.NamespaceID})
		}
		c := SummaryCounts(p.SummaryCounts)
		sr := &out.Body.Series[i]
		sr.Points = append(sr.Points, SummaryPoint{Minute: p.Minute, SummaryCounts: c})
		t := &sr.Totals
		t.Reported += c.Reported
		t.Merged += c.Merged
		t.Replayed += c.Replayed
		t.Succeeded += c.Succeeded
		t.Failed += c.Failed
		t.Exhausted += c.Exhausted
		t.CallbacksSucceeded += c.CallbacksSucceeded
		t.CallbacksFailed += c.CallbacksFailed
		t.CallbacksExhausted += c.CallbacksExhausted
	}
	sortSeries(out.Body.Series)
	all := map[retry.State]int64{}
	out.Body.SceneStates = make([]SceneStates, len(scenes))
	for i, sc := range scenes {
		out.Body.SceneStates[i] = SceneStates{SceneID: sc.SceneID, Scene: sc.Scene, GroupID: sc.GroupID, Group: sc.Group,
			NamespaceID: sc.NamespaceID, States: stateNames(sc.States)}
		for st, n := range sc.States {
			all[st] += n
		}
	}
	out.Body.States = stateNames(all)
	return out, nil
}

func sortSeries(s []SceneSeries) {
	slices.SortFunc(s, func(a, b SceneSeries) int { return cmp.Compare(a.SceneID, b.SceneID) })
}

// queryField is a 400 naming a query parameter.
func queryField(field, reason string) error {
	return huma.NewError(http.StatusBadRequest, field+": "+reason, &huma.ErrorDetail{Location: "query." + field, Message: reason})
}
