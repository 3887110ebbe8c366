package consoleapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// MaxJobIDs bounds the task ids of one job; more go by a filter.
const MaxJobIDs = 10000

// JobWaker is told of every job the API makes, so that the node's runner takes it up at once
// rather than at its next look.
type JobWaker interface{ Wake() }

// Job is an operator's action on many tasks, worked through on the server in batches.
type Job struct {
	ID        int64      `json:"id"`
	Action    string     `json:"action" enum:"trigger,pause,resume,cancel,replay,discard,set_next"`
	State     string     `json:"state" enum:"running,done,cancelled,failed"`
	Total     int64      `json:"total" doc:"the tasks the request matched when the job was made"`
	Done      int64      `json:"done" doc:"the tasks worked through so far; it only grows"`
	Failed    int64      `json:"failed" doc:"of those done, the tasks the action was not taken on: in a state it does not apply to, gone, or (replay) whose key is active again in its scene"`
	CreatedBy string     `json:"created_by"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty" doc:"when it ended; absent while running"`
	Error     string     `json:"error" doc:"why a failed job stopped"`
}

func jobOut(j storage.Job) Job {
	return Job{ID: j.ID, Action: string(j.Action), State: string(j.State), Total: j.Total, Done: j.Done, Failed: j.Failed,
		CreatedBy: j.CreatedBy, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, EndedAt: j.EndedAt, Error: j.Error}
}

// JobFilterBody selects the tasks of a job: the task list's filter parameters, as JSON.
type JobFilterBody struct {
	Namespace   string    `json:"namespace,omitempty" maxLength:"64" doc:"a namespace's name; without it, every namespace the caller operates"`
	GroupID     int64     `json:"group_id,omitempty" minimum:"0"`
	SceneID     int64     `json:"scene_id,omitempty" minimum:"0"`
	State       string    `json:"state,omitempty" maxLength:"200" doc:"states, comma separated: waiting,held,running,succeeded,exhausted,paused,cancelled"`
	Key         string    `json:"key,omitempty" maxLength:"191" doc:"an exact idempotency key"`
	Error       string    `json:"error,omitempty" maxLength:"200" doc:"a part of the last error"`
	Arg         string    `json:"arg,omitempty" maxLength:"500" doc:"path=value: a value inside the arguments, such as orderId=42"`
	CreatedFrom time.Time `json:"created_from,omitempty" doc:"created at or after (RFC 3339)"`
	CreatedTo   time.Time `json:"created_to,omitempty" doc:"created before"`
	NextFrom    time.Time `json:"next_from,omitempty" doc:"next trigger at or after"`
	NextTo      time.Time `json:"next_to,omitempty" doc:"next trigger before"`
}

func (b *JobFilterBody) input() TaskFilterInput {
	return TaskFilterInput{Namespace: b.Namespace, GroupID: b.GroupID, SceneID: b.SceneID, State: b.State, Key: b.Key,
		Error: b.Error, Arg: b.Arg, CreatedFrom: b.CreatedFrom, CreatedTo: b.CreatedTo, NextFrom: b.NextFrom, NextTo: b.NextTo}
}

// CreateJobInput is a bulk action: on a list of tasks or on every task a filter matches.
type CreateJobInput struct {
	Body struct {
		Action string         `json:"action" enum:"trigger,pause,resume,cancel,replay,discard,set_next"`
		IDs    []int64        `json:"ids,omitempty" maxItems:"10000" doc:"the tasks; give these or filter"`
		Filter *JobFilterBody `json:"filter,omitempty" doc:"every task the filter matches, among those that exist when the job is made; give this or ids"`
		At     *time.Time     `json:"at,omitempty" doc:"the new next trigger time, for set_next only"`
	}
}

// JobOutput is one job.
type JobOutput struct{ Body Job }

// JobIDInput names a job.
type JobIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

// ListJobsInput is a page of the jobs, newest first.
type ListJobsInput struct {
	State  string `query:"state" maxLength:"100" doc:"states, comma separated: running,done,cancelled,failed"`
	Cursor string `query:"cursor" maxLength:"30" doc:"the next_cursor of the page before"`
	Limit  int    `query:"limit" minimum:"1" maximum:"500" default:"50"`
}

// JobList is a page of jobs.
type JobList struct {
	Body struct {
		Items      []Job  `json:"items"`
		NextCursor string `json:"next_cursor" doc:"pass as cursor for the next page; empty on the last one"`
	}
}

func (a *API) registerJobs() {
	tags := []string{"jobs"}
	p := Prefix + "/jobs"
	mutation(a, huma.Operation{OperationID: "jobs-create", Method: http.MethodPost, Path: p, Summary: "Start a bulk action",
		Description: "Takes an action (as on one task) on a list of task ids or on every task a filter matches, as a job the " +
			"server works through in batches, at most console.bulk_rate tasks a second; tasks in a state the action does not " +
			"apply to are counted as failed and left as they are. The filter is the task list's, limited to the namespaces " +
			"the caller operates; its total is what GET tasks/count answers. Answers 202 with the job; read it for its " +
			"progress. Needs operator in the tasks' namespaces.",
		Tags: tags, Security: security, DefaultStatus: http.StatusAccepted, Errors: []int{400, 401, 403}}, a.createJob)
	query(a, huma.Operation{OperationID: "jobs-list", Method: http.MethodGet, Path: p, Summary: "List bulk jobs",
		Description: "Newest first, paged by an opaque cursor: the jobs in the namespaces the caller reads, and the caller's own. " +
			"Needs viewer.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403}}, a.listJobs)
	query(a, huma.Operation{OperationID: "jobs-get", Method: http.MethodGet, Path: p + "/{id}", Summary: "Read a bulk job",
		Description: "Its state and progress. Needs viewer in its namespaces.",
		Tags:        tags, Security: security, Errors: []int{401, 403, 404}}, a.getJob)
	mutation(a, huma.Operation{OperationID: "jobs-cancel", Method: http.MethodPost, Path: p + "/{id}/cancel",
		Summary:     "Cancel a bulk job",
		Description: "Stops it before its next batch; what it did stays done. 409 when it has ended. Needs operator in its namespaces.",
		Tags:        tags, Security: security, Errors: []int{401, 403, 404, 409}}, a.cancelJob)
}

func (a *API) createJob(ctx context.Context, in *CreateJobInput, ch *Change) (*JobOutput, error) {
	b := &in.Body
	ch.Target = "job"
	p := auth.From(ctx)
	if p == nil {
		return nil, auth.ErrUnauthenticated
	}
	action, err := retry.ParseAction(b.Action)
	if err != nil {
		return nil, badField("action", "want trigger, pause, resume, cancel, replay, discard or set_next")
	}
	j := storage.Job{Action: action, CreatedBy: p.Actor()}
	switch {
	case action == retry.SetNextAt && (b.At == nil || b.At.IsZero()):
		return nil, badField("at", "set_next needs the new next trigger time")
	case action == retry.SetNextAt:
		j.At = *b.At
	case b.At != nil:
		return nil, badField("at", "only set_next takes a time")
	}
	switch {
	case b.Filter != nil && len(b.IDs) > 0:
		return nil, badField("filter", "give task ids or a filter, not both")
	case b.Filter != nil:
		ch.Detail = fmt.Sprintf("%s on a filter", action)
		if err := a.filterJob(ctx, b.Filter, &j); err != nil {
			return nil, err
		}
	case len(b.IDs) > 0:
		ch.Detail = fmt.Sprintf("%s on %d tasks", action, len(b.IDs))
		if err := a.idJob(ctx, b.IDs, &j); err != nil {
			return nil, err
		}
	default:
		return nil, badField("ids", "give the task ids, or a filter")
	}
	ch.NamespaceID = j.NamespaceID
	j, err = a.store.CreateJob(ctx, j)
	if err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("job %d", j.ID)
	ch.Detail += fmt.Sprintf(", %d matched", j.Total)
	if a.jobs != nil {
		a.jobs.Wake()
	}
	return &JobOutput{Body: jobOut(j)}, nil
}

// filterJob fills in a filter job: the filter limited to the namespaces the caller operates,
// its total, and the last task it may act on.
func (a *API) filterJob(ctx context.Context, body *JobFilterBody, j *storage.Job) error {
	fin := body.input()
	f, nsID, err := a.taskFilter(ctx, &fin, auth.Operator)
	if err != nil {
		return inFilter(err)
	}
	if nsID == 0 && len(f.NamespaceIDs) == 1 {
		nsID = f.NamespaceIDs[0]
	}
	// The highest id first: a task made between the two reads is counted, not acted on.
	if j.MaxTaskID, err = a.store.MaxTaskID(ctx); err != nil {
		return err
	}
	if j.Total, err = a.store.CountTasks(ctx, f); err != nil {
		return err
	}
	j.NamespaceID = nsID
	j.Request = storage.JobRequest{Filter: &f, NamespaceIDs: f.NamespaceIDs}
	return nil
}

// inFilter names the fields of a 400 from the task filter as the fields of the job's filter.
func inFilter(err error) error {
	var e *Error
	if !errors.As(err, &e) || e.status != http.StatusBadRequest {
		return err
	}
	out := &Error{status: e.status, Body: e.Body}
	out.Body.Details = make([]FieldError, len(e.Body.Details))
	for i, d := range e.Body.Details {
		out.Body.Details[i] = FieldError{Field: "filter." + d.Field, Reason: d.Reason}
		if d.Field != "" {
			out.Body.Message = strings.Replace(out.Body.Message, d.Field+":", "filter."+d.Field+":", 1)
		}
	}
	return out
}

// idJob fills in an id job: every id names a task that exists (ids are never reused, so the
// job can act on no task made after it), and the caller operates every namespace they are in.
func (a *API) idJob(ctx context.Context, ids []int64, j *storage.Job) error {
	if len(ids) > MaxJobIDs {
		return badField("ids", fmt.Sprintf("%d ids; at most %d, or use a filter", len(ids), MaxJobIDs))
	}
	for i, id := range ids {
		if id < 1 {
			return badField(fmt.Sprintf("ids[%d]", i), "a task id is 1 or more")
		}
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	where, err := a.store.TaskNamespaces(ctx, ids)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, ok := where[id]; !ok {
			return badField("ids", fmt.Sprintf("no task %d", id))
		}
	}
	nss := []int64{}
	for _, ns := range where {
		if !slices.Contains(nss, ns) {
			nss = append(nss, ns)
		}
	}
	slices.Sort(nss)
	for _, ns := range nss {
		if _, err := auth.Require(ctx, ns, auth.Operator); err != nil {
			return err
		}
	}
	if len(nss) == 1 {
		j.NamespaceID = nss[0]
	}
	j.Total = int64(len(ids))
	j.Request = storage.JobRequest{IDs: ids, NamespaceIDs: nss}
	return nil
}

// job reads a job and checks that the caller holds role in every namespace its tasks may be
// in; a job whose tasks are in none (its ids named no task) is its creator's and the global
// roles'.
func (a *API) job(ctx context.Context, id int64, role auth.Role) (storage.Job, error) {
	p := auth.From(ctx)
	if p == nil {
		return storage.Job{}, auth.ErrUnauthenticated
	}
	j, err := a.store.Job(ctx, id)
	if err != nil {
		return j, err
	}
	nss := j.Request.NamespaceIDs
	switch {
	case nss == nil:
		nss = []int64{auth.AllNamespaces}
	case len(nss) == 0 && p.Actor() == j.CreatedBy:
		return j, nil
	case len(nss) == 0:
		nss = []int64{auth.AllNamespaces}
	}
	for _, ns := range nss {
		if _, err := auth.Require(ctx, ns, role); err != nil {
			return j, err
		}
	}
	return j, nil
}

func (a *API) getJob(ctx context.Context, in *JobIDInput) (*JobOutput, error) {
	j, err := a.job(ctx, in.ID, auth.Viewer)
	if err != nil {
		return nil, err
	}
	return &JobOutput{Body: jobOut(j)}, nil
}

func (a *API) listJobs(ctx context.Context, in *ListJobsInput) (*JobList, error) {
	p := auth.From(ctx)
	if p == nil {
		return nil, auth.ErrUnauthenticated
	}
	var f storage.JobFilter
	if ids, all := p.Namespaces(auth.Viewer); !all {
		if len(ids) == 0 {
			return nil, fmt.Errorf("%w: it needs viewer of a namespace", auth.ErrForbidden)
		}
		f.NamespaceIDs, f.OrCreatedBy = ids, p.Actor()
	}
	if in.State != "" {
		for _, name := range strings.Split(in.State, ",") {
			st, err := storage.ParseJobState(strings.TrimSpace(name))
			if err != nil {
				return nil, badQuery("state", "want "+storage.JobStates())
			}
			f.States = append(f.States, st)
		}
	}
	var before int64
	if in.Cursor != "" {
		n, err := strconv.ParseInt(in.Cursor, 10, 64)
		if err != nil || n < 1 {
			return nil, badQuery("cursor", "not a cursor this list gave")
		}
		before = n
	}
	jobs, err := a.store.ListJobs(ctx, f, before, in.Limit)
	if err != nil {
		return nil, err
	}
	out := &JobList{}
	out.Body.Items = make([]Job, len(jobs))
	for i, j := range jobs {
		out.Body.Items[i] = jobOut(j)
	}
	if len(jobs) == in.Limit {
		out.Body.NextCursor = strconv.FormatInt(jobs[len(jobs)-1].ID, 10)
	}
	return out, nil
}

func (a *API) cancelJob(ctx context.Context, in *JobIDInput, ch *Change) (*JobOutput, error) {
	ch.Target = fmt.Sprintf("job %d", in.ID)
	j, err := a.job(ctx, in.ID, auth.Operator)
	ch.NamespaceID = j.NamespaceID
	if err != nil {
		return nil, err
	}
	if j.Ended() {
		return nil, huma.NewError(http.StatusConflict, fmt.Sprintf("job %d is %s; only a running job can be cancelled", j.ID, j.State))
	}
	j, err = a.store.CancelJob(ctx, in.ID)
	if errors.Is(err, storage.ErrConflict) {
		return nil, huma.NewError(http.StatusConflict, fmt.Sprintf("job %d is %s; only a running job can be cancelled", j.ID, j.State))
	}
	if err != nil {
		return nil, err
	}
	ch.Detail = fmt.Sprintf("%s cancelled: %d of %d tasks worked through, %d not acted on", j.Action, j.Done, j.Total, j.Failed)
	return &JobOutput{Body: jobOut(j)}, nil
}
