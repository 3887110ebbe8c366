package consoleapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// defaultMaxPayload bounds a task's arguments when Params names no limit (the client API's
// default).
const defaultMaxPayload = 256 << 10

// Task is a retry task as listed: its arguments cut at 256 bytes.
type Task struct {
	ID            int64        `json:"id"`
	GroupID       int64        `json:"group_id"`
	SceneID       int64        `json:"scene_id"`
	Key           string       `json:"key" doc:"the idempotency key"`
	State         string       `json:"state" enum:"waiting,held,running,succeeded,exhausted,paused,cancelled"`
	Args          string       `json:"args" doc:"the arguments (JSON text); in a list only their first 256 bytes"`
	ArgsTruncated bool         `json:"args_truncated,omitempty" doc:"true when args was cut"`
	Attempts      int          `json:"attempts" doc:"remote replays so far"`
	LocalAttempts int          `json:"local_attempts"`
	Merges        int          `json:"merges" doc:"repeated reports merged into this task"`
	NextAt        time.Time    `json:"next_at" doc:"the next trigger time (while running: the one claimed)"`
	DeadlineAt    *time.Time   `json:"deadline_at,omitempty"`
	LastError     string       `json:"last_error"`
	Callback      TaskCallback `json:"callback"`
	CreatedAt     time.Time    `json:"created_at"`
	UpdatedAt     time.Time    `json:"updated_at"`
	EndedAt       *time.Time   `json:"ended_at,omitempty"`
}

// TaskCallback is the state of a task's callback.
type TaskCallback struct {
	State    string     `json:"state" enum:"none,waiting,running,succeeded,exhausted"`
	Attempts int        `json:"attempts"`
	NextAt   *time.Time `json:"next_at,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// Attempt is one replay or callback call made for a task.
type Attempt struct {
	Kind       string    `json:"kind" enum:"replay,callback"`
	Number     int       `json:"number"`
	InstanceID string    `json:"instance" doc:"the client instance that ran it"`
	NodeID     string    `json:"node" doc:"the server node that called it"`
	StartedAt  time.Time `json:"started_at"`
	DurationMs int64     `json:"duration_ms"`
	Outcome    string    `json:"outcome"`
	Error      string    `json:"error,omitempty"`
}

func taskOut(t retry.Task, truncated bool) Task {
	return Task{ID: t.ID, GroupID: t.GroupID, SceneID: t.SceneID, Key: t.IdempotencyKey, State: t.State.String(),
		Args: string(t.Args), ArgsTruncated: truncated, Attempts: t.Attempts, LocalAttempts: t.LocalAttempts,
		Merges: t.Merges, NextAt: t.NextAt, DeadlineAt: t.DeadlineAt, LastError: t.LastError,
		Callback: TaskCallback{State: t.CallbackState.String(), Attempts: t.CallbackAttempts, NextAt: t.CallbackNextAt,
			Error: t.CallbackError},
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, EndedAt: t.EndedAt}
}

// TaskFilterInput selects tasks; every parameter narrows the selection.
type TaskFilterInput struct {
	Namespace   string    `query:"namespace" maxLength:"64" doc:"a namespace's name; without it, every namespace the caller may read"`
	GroupID     int64     `query:"group_id" minimum:"0"`
	SceneID     int64     `query:"scene_id" minimum:"0"`
	State       string    `query:"state" maxLength:"200" doc:"states, comma separated: waiting,held,running,succeeded,exhausted,paused,cancelled"`
	Key         string    `query:"key" maxLength:"191" doc:"an exact idempotency key"`
	Error       string    `query:"error" maxLength:"200" doc:"a part of the last error"`
	Arg         string    `query:"arg" maxLength:"500" doc:"path=value: a value inside the arguments, such as orderId=42 or order.items[0].sku=A1 (compared as text)"`
	CreatedFrom time.Time `query:"created_from" doc:"created at or after (RFC 3339)"`
	CreatedTo   time.Time `query:"created_to" doc:"created before"`
	NextFrom    time.Time `query:"next_from" doc:"next trigger at or after"`
	NextTo      time.Time `query:"next_to" doc:"next trigger before"`
}

// ListTasksInput is a page of a task list.
type ListTasksInput struct {
	TaskFilterInput
	Order  string `query:"order" enum:"newest,due" default:"newest" doc:"newest first (by id), or by next trigger time: then the waiting tasks, or the waiting, held or paused ones the state parameter names"`
	Cursor string `query:"cursor" maxLength:"100" doc:"the next_cursor of the page before"`
	Limit  int    `query:"limit" minimum:"1" maximum:"500" default:"50"`
}

// TaskList is a page of tasks.
type TaskList struct {
	Body struct {
		Items      []Task `json:"items"`
		NextCursor string `json:"next_cursor" doc:"pass as cursor for the next page; empty on the last one"`
		Partial    bool   `json:"partial,omitempty" doc:"true when the page is a search that stopped after 10,000 task ids examined before it was full (it may even be empty): next_cursor goes on with the older tasks"`
	}
}

// TaskCount is how many tasks a filter matches.
type TaskCount struct {
	Body struct {
		Count int64 `json:"count"`
	}
}

// TaskIDInput names a task.
type TaskIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

// TaskDetail is a task with its full arguments and every attempt.
type TaskDetail struct {
	Body struct {
		Task
		Attempts []Attempt `json:"attempts" doc:"oldest first"`
	}
}

// TaskActionInput is an action on one task.
type TaskActionInput struct {
	ID     int64  `path:"id" minimum:"1"`
	Action string `path:"action" enum:"trigger,pause,resume,cancel,replay,discard"`
}

// SetNextInput moves a task's next trigger time.
type SetNextInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		At time.Time `json:"at" doc:"the new next trigger time"`
	}
}

// SetArgsInput replaces a task's arguments.
type SetArgsInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Args json.RawMessage `json:"args" doc:"the new arguments, any JSON value, at most client_api.max_payload_bytes"`
	}
}

// CreateTaskInput is a task made by hand.
type CreateTaskInput struct {
	Body struct {
		Namespace string          `json:"namespace" minLength:"1" maxLength:"64"`
		Group     string          `json:"group" minLength:"1" maxLength:"64"`
		Scene     string          `json:"scene" minLength:"1" maxLength:"64"`
		Key       string          `json:"key,omitempty" maxLength:"191" doc:"the idempotency key; one is made when it is empty"`
		Args      json.RawMessage `json:"args" doc:"the arguments, any JSON value"`
		NextAt    *time.Time      `json:"next_at,omitempty" doc:"the first trigger time; now when absent"`
	}
}

// CreatedTask is the answer to a creation.
type CreatedTask struct {
	Body struct {
		ID     int64 `json:"id"`
		Merged bool  `json:"merged" doc:"true when the scene already had an active task with this key: the report merged into it"`
	}
}

// TaskOutput is a task after an action.
type TaskOutput struct{ Body Task }

func (a *API) registerTasks() {
	tags := []string{"tasks"}
	p := Prefix + "/tasks"
	query(a, huma.Operation{OperationID: "tasks-list", Method: http.MethodGet, Path: p, Summary: "List tasks",
		Description: "Filtered on the server, paged by an opaque cursor (never an offset), newest first or by due time. " +
			"Arguments are cut at 256 bytes; read one task for all of them. Needs viewer.\n\n" +
			"Every page costs the same on a table of any size. A key, scenes (a scene, a group, a namespace) and states " +
			"are served by indexes and give full pages. A part of the error text, a value in the arguments and the next " +
			"trigger time cannot be: such a search examines at most 10,000 task ids per page, newest first below the cursor, " +
			"and answers what it found there with partial=true and a next_cursor to search on; a created_from/created_to range " +
			"narrows the ids examined to the tasks created in it, so combine them to search far back. " +
			"By due time (order=due) lists the waiting tasks (or the waiting, held or paused ones state names) soonest first; " +
			"alone it reads the due index of every bucket, with another filter it sorts the tasks that filter selects in those states.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403}}, a.listTasks)
	query(a, huma.Operation{OperationID: "tasks-get", Method: http.MethodGet, Path: p + "/{id}",
		Summary: "Read a task", Description: "With its full arguments, every attempt and its callback's state. Needs viewer.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.getTask)
	query(a, huma.Operation{OperationID: "tasks-count", Method: http.MethodGet, Path: p + "/count",
		Summary: "Count the tasks a filter matches", Description: "The list's filter parameters; what a bulk action over the filter would go through, " +
			"for an operator to confirm; it counts the rows, so it costs what the filter reads. Needs viewer.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403}}, a.countTasks)
	mutation(a, huma.Operation{OperationID: "tasks-act", Method: http.MethodPost, Path: p + "/{id}/{action}",
		Summary: "Act on a task", Description: "trigger (waiting, held, paused → due now), pause (waiting, held), resume (paused), " +
			"cancel (waiting, held, running, paused), replay (a dead letter, with fresh attempts), discard (a dead letter). " +
			"A task in another state answers 409 and is left as it is. Needs operator.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404, 409}}, a.actOnTask)
	mutation(a, huma.Operation{OperationID: "tasks-set-next", Method: http.MethodPut, Path: p + "/{id}/next-at",
		Summary: "Set a task's next trigger time", Description: "For a waiting, held or paused task; 409 otherwise. Needs operator.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404, 409}}, a.setTaskNext)
	mutation(a, huma.Operation{OperationID: "tasks-set-args", Method: http.MethodPut, Path: p + "/{id}/args",
		Summary: "Edit a task's arguments", Description: "For a waiting, held or paused task or a dead letter (never a running one: 409). " +
			"Valid JSON of at most client_api.max_payload_bytes. Needs operator.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404, 409}}, a.setTaskArgs)
	mutation(a, huma.Operation{OperationID: "tasks-create", Method: http.MethodPost, Path: p, Summary: "Create a task by hand",
		Description: "As if the group's client had reported it: a key active in the scene merges into that task. Needs operator.",
		Tags:        tags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 404}}, a.createTask)
}

// taskFilter turns the input into a storage filter limited to the namespaces the caller may
// read with role.
func (a *API) taskFilter(ctx context.Context, in *TaskFilterInput, role auth.Role) (storage.TaskFilter, int64, error) {
	var f storage.TaskFilter
	p := auth.From(ctx)
	if p == nil {
		return f, 0, auth.ErrUnauthenticated
	}
	var nsID int64
	if in.Namespace != "" {
		ns, err := a.store.NamespaceByName(ctx, in.Namespace)
		if err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return f, 0, badField("namespace", "no such namespace")
			}
			return f, 0, err
		}
		if _, err := auth.Require(ctx, ns.ID, role); err != nil {
			return f, 0, err
		}
		nsID, f.NamespaceIDs = ns.ID, []int64{ns.ID}
	} else {
		ids, all := p.Namespaces(role)
		if !all {
			if len(ids) == 0 {
				return f, 0, fmt.Errorf("%w: it needs %s of a namespace", auth.ErrForbidden, role)
			}
			f.NamespaceIDs = ids
		}
	}
	f.GroupID = in.GroupID
	if in.SceneID != 0 {
		f.SceneIDs = []int64{in.SceneID}
	}
	if in.State != "" {
		for _, name := range strings.Split(in.State, ",") {
			st, err := retry.ParseState(strings.TrimSpace(name))
			if err != nil {
				return f, 0, badQuery("state", err.Error())
			}
			f.States = append(f.States, st)
		}
	}
	f.Key, f.ErrorContains = in.Key, in.Error
	if in.Arg != "" {
		path, value, ok := strings.Cut(in.Arg, "=")
		path = strings.TrimPrefix(path, "args.")
		if !ok {
			return f, 0, badQuery("arg", "want path=value, such as orderId=42")
		}
		if err := storage.CheckArgPath(path); err != nil {
			return f, 0, badQuery("arg", err.Error())
		}
		f.Arg = &storage.ArgMatch{Path: path, Value: value}
	}
	for _, r := range []struct {
		t   time.Time
		dst **time.Time
	}{{in.CreatedFrom, &f.CreatedFrom}, {in.CreatedTo, &f.CreatedTo}, {in.NextFrom, &f.NextFrom}, {in.NextTo, &f.NextTo}} {
		if !r.t.IsZero() {
			t := r.t
			*r.dst = &t
		}
	}
	return f, nsID, nil
}

// badQuery is a 400 naming a query parameter and the reason.
func badQuery(param, reason string) error {
	return huma.NewError(http.StatusBadRequest, fmt.Sprintf("%s: %s", param, reason),
		&huma.ErrorDetail{Location: "query." + param, Message: reason})
}

func (a *API) listTasks(ctx context.Context, in *ListTasksInput) (*TaskList, error) {
	f, _, err := a.taskFilter(ctx, &in.TaskFilterInput, auth.Viewer)
	if err != nil {
		return nil, err
	}
	order := storage.NewestFirst
	if in.Order == "due" {
		order = storage.ByDue
		for _, st := range f.States {
			if !slices.Contains(storage.DueStates(), st) {
				return nil, badQuery("state", fmt.Sprintf("a list by due time holds waiting, held or paused tasks, not %s ones", st))
			}
		}
	}
	var after *storage.TaskCursor
	if in.Cursor != "" {
		c, err := storage.ParseTaskCursor(in.Cursor, order)
		if err != nil {
			return nil, badQuery("cursor", err.Error())
		}
		after = &c
	}
	page, err := a.store.ListTaskPage(ctx, f, order, after, in.Limit)
	if err != nil {
		return nil, err
	}
	out := &TaskList{}
	out.Body.Items = make([]Task, len(page.Tasks))
	for i, t := range page.Tasks {
		out.Body.Items[i] = taskOut(t, page.ArgsTruncated[i])
	}
	if page.Next != nil {
		out.Body.NextCursor = page.Next.String()
	}
	out.Body.Partial = page.Partial
	return out, nil
}

func (a *API) countTasks(ctx context.Context, in *TaskFilterInput) (*TaskCount, error) {
	f, _, err := a.taskFilter(ctx, in, auth.Viewer)
	if err != nil {
		return nil, err
	}
	n, err := a.store.CountTasks(ctx, f)
	if err != nil {
		return nil, err
	}
	out := &TaskCount{}
	out.Body.Count = n
	return out, nil
}

// task reads a task and checks that the caller holds role in its namespace.
func (a *API) task(ctx context.Context, id int64, role auth.Role, ch *Change) (retry.Task, error) {
	if auth.From(ctx) == nil {
		return retry.Task{}, auth.ErrUnauthenticated
	}
	t, ns, err := a.store.TaskNamespace(ctx, id)
	if err != nil {
		return t, err
	}
	if ch != nil {
		ch.NamespaceID = ns
	}
	if _, err := auth.Require(ctx, ns, role); err != nil {
		return t, err
	}
	return t, nil
}

func (a *API) getTask(ctx context.Context, in *TaskIDInput) (*TaskDetail, error) {
	t, err := a.task(ctx, in.ID, auth.Viewer, nil)
	if err != nil {
		return nil, err
	}
	atts, err := a.store.Attempts(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	out := &TaskDetail{}
	out.Body.Task = taskOut(t, false)
	out.Body.Attempts = make([]Attempt, len(atts))
	for i, at := range atts {
		out.Body.Attempts[i] = Attempt{Kind: at.Kind.String(), Number: at.Number, InstanceID: at.InstanceID, NodeID: at.NodeID,
			StartedAt: at.StartedAt, DurationMs: at.Duration.Milliseconds(), Outcome: at.Outcome.String(), Error: at.Error}
	}
	return out, nil
}

func (a *API) actOnTask(ctx context.Context, in *TaskActionInput, ch *Change) (*TaskOutput, error) {
	ch.Target, ch.Detail = fmt.Sprintf("task %d", in.ID), in.Action
	action, err := retry.ParseAction(in.Action)
	if err != nil || action == retry.SetNextAt {
		return nil, huma.NewError(http.StatusBadRequest, "action: want trigger, pause, resume, cancel, replay or discard")
	}
	return a.apply(ctx, in.ID, action, time.Time{}, ch)
}

func (a *API) setTaskNext(ctx context.Context, in *SetNextInput, ch *Change) (*TaskOutput, error) {
	ch.Target, ch.Detail = fmt.Sprintf("task %d", in.ID), "set_next "+in.Body.At.UTC().Format(time.RFC3339Nano)
	if in.Body.At.IsZero() {
		return nil, badField("at", "a time is needed")
	}
	return a.apply(ctx, in.ID, retry.SetNextAt, in.Body.At, ch)
}

// apply takes action on one task: 409 when the task is not in a state the action applies to
// (checked before, and again by the conditional update, so a task that changed meanwhile is
// left as it is) or when replaying it would give its scene two active tasks with one key.
func (a *API) apply(ctx context.Context, id int64, action retry.Action, at time.Time, ch *Change) (*TaskOutput, error) {
	t, err := a.task(ctx, id, auth.Operator, ch)
	if err != nil {
		return nil, err
	}
	tr, err := action.Transition()
	if err != nil {
		return nil, err
	}
	if !tr.Applies(t.State) {
		return nil, huma.NewError(http.StatusConflict, fmt.Sprintf("task %d is %s; %s applies to a task that is %s",
			id, t.State, action, stateList(tr.From)))
	}
	res, err := a.store.Apply(ctx, action, []int64{id}, at)
	if err != nil {
		return nil, err
	}
	switch {
	case len(res.Conflicts) > 0:
		return nil, huma.NewError(http.StatusConflict, fmt.Sprintf("task %d not replayed: its scene has another active task with key %q", id, t.IdempotencyKey))
	case res.Changed == 0:
		return nil, huma.NewError(http.StatusConflict, fmt.Sprintf("task %d changed state meanwhile; %s was not taken", id, action))
	}
	if t, err = a.store.Task(ctx, id); err != nil {
		return nil, err
	}
	return &TaskOutput{Body: taskOut(t, false)}, nil
}

func stateList(states []retry.State) string {
	names := make([]string, len(states))
	for i, s := range states {
		names[i] = s.String()
	}
	return strings.Join(names, ", ")
}

func (a *API) maxPayload() int64 {
	if a.maxPayloadBytes > 0 {
		return a.maxPayloadBytes
	}
	return defaultMaxPayload
}

// checkArgs validates arguments given by an operator.
func (a *API) checkArgs(args json.RawMessage) error {
	if len(args) == 0 {
		return badField("args", "arguments are needed (any JSON value)")
	}
	if int64(len(args)) > a.maxPayload() {
		return badField("args", fmt.Sprintf("%d bytes; the limit is %d (client_api.max_payload_bytes)", len(args), a.maxPayload()))
	}
	if !json.Valid(args) {
		return badField("args", "not valid JSON")
	}
	return nil
}

func (a *API) setTaskArgs(ctx context.Context, in *SetArgsInput, ch *Change) (*TaskOutput, error) {
	ch.Target, ch.Detail = fmt.Sprintf("task %d", in.ID), fmt.Sprintf("arguments, %d bytes", len(in.Body.Args))
	if err := a.checkArgs(in.Body.Args); err != nil {
		return nil, err
	}
	if _, err := a.task(ctx, in.ID, auth.Operator, ch); err != nil {
		return nil, err
	}
	if err := a.store.SetArgs(ctx, in.ID, in.Body.Args); err != nil {
		return nil, err
	}
	t, err := a.store.Task(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &TaskOutput{Body: taskOut(t, false)}, nil
}

func (a *API) createTask(ctx context.Context, in *CreateTaskInput, ch *Change) (*CreatedTask, error) {
	b := &in.Body
	ch.Target = fmt.Sprintf("task in %s/%s/%s", b.Namespace, b.Group, b.Scene)
	p := auth.From(ctx)
	if p == nil {
		return nil, auth.ErrUnauthenticated
	}
	if err := a.checkArgs(b.Args); err != nil {
		return nil, err
	}
	g, err := a.store.GroupByName(ctx, b.Namespace, b.Group)
	if err != nil {
		return nil, err
	}
	ch.NamespaceID = g.NamespaceID
	if _, err := auth.Require(ctx, g.NamespaceID, auth.Operator); err != nil {
		return nil, err
	}
	sc, err := a.store.SceneByName(ctx, g.ID, b.Scene)
	if err != nil {
		return nil, err
	}
	if b.Key == "" {
		var r [12]byte
		_, _ = rand.Read(r[:])
		b.Key = "console-" + hex.EncodeToString(r[:])
	}
	buckets, err := a.store.BucketCount(ctx)
	if err != nil {
		return nil, err
	}
	next := time.Now()
	if b.NextAt != nil {
		next = *b.NextAt
	}
	res, err := a.store.Ingest(ctx, []storage.NewTask{{GroupID: g.ID, SceneID: sc.ID, Bucket: retry.BucketOf(b.Key, buckets),
		Key: b.Key, Args: b.Args, Error: "created by hand by " + p.Actor(), State: retry.Waiting, NextAt: next}})
	if err != nil {
		return nil, err
	}
	out := &CreatedTask{}
	out.Body.ID, out.Body.Merged = res[0].TaskID, res[0].Merged
	ch.Target = fmt.Sprintf("task %d", res[0].TaskID)
	ch.Detail = "key " + b.Key
	if res[0].Merged {
		ch.Detail += " (merged into the active task)"
	}
	return out, nil
}
