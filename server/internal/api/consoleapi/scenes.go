package consoleapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/retry"
)

// Backoff is a back-off policy; durations are written as "500ms", "10s", "2h". Only the fields
// of its strategy are read.
type Backoff struct {
	Strategy   string   `json:"strategy" enum:"fixed,exponential,levels,cron,random"`
	Interval   string   `json:"interval,omitempty" doc:"fixed: the wait"`
	Base       string   `json:"base,omitempty" doc:"exponential: the first wait"`
	Multiplier float64  `json:"multiplier,omitempty" doc:"exponential: the growth per failure (0 means 2)"`
	Cap        string   `json:"cap,omitempty" doc:"exponential: the longest wait before jitter"`
	Jitter     string   `json:"jitter,omitempty" doc:"exponential: none, full or equal"`
	Levels     []string `json:"levels,omitempty" doc:"levels: the wait after each failure; empty means the default ladder"`
	Cron       string   `json:"cron,omitempty" doc:"cron: the expression (UTC)"`
	Min        string   `json:"min,omitempty" doc:"random: the shortest wait"`
	Max        string   `json:"max,omitempty" doc:"random: the longest wait"`
}

func backoffOut(p backoff.Policy) Backoff {
	s := func(d backoff.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	b := Backoff{Strategy: string(p.Strategy), Interval: s(p.Interval), Base: s(p.Base), Multiplier: p.Multiplier,
		Cap: s(p.Cap), Jitter: string(p.Jitter), Cron: p.Cron, Min: s(p.Min), Max: s(p.Max)}
	for _, l := range p.Levels {
		b.Levels = append(b.Levels, l.String())
	}
	return b
}

// policy checks b and returns its policy; an error is a 400 naming field's part at fault.
func (b *Backoff) policy(field string) (backoff.Policy, error) {
	dur := func(name, v string) (backoff.Duration, error) {
		if v == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, badField(field+"."+name, fmt.Sprintf("%q is not a duration such as 500ms, 10s or 2h", v))
		}
		return backoff.Duration(d), nil
	}
	p := backoff.Policy{Strategy: backoff.Strategy(b.Strategy), Multiplier: b.Multiplier, Jitter: backoff.Jitter(b.Jitter), Cron: b.Cron}
	var err error
	for _, f := range []struct {
		name string
		v    string
		dst  *backoff.Duration
	}{{"interval", b.Interval, &p.Interval}, {"base", b.Base, &p.Base}, {"cap", b.Cap, &p.Cap},
		{"min", b.Min, &p.Min}, {"max", b.Max, &p.Max}} {
		if *f.dst, err = dur(f.name, f.v); err != nil {
			return p, err
		}
	}
	for i, l := range b.Levels {
		d, err := dur(fmt.Sprintf("levels[%d]", i), l)
		if err != nil {
			return p, err
		}
		p.Levels = append(p.Levels, d)
	}
	if _, err := p.Compile(); err != nil {
		return p, badField(field, strings.TrimPrefix(err.Error(), "backoff: "))
	}
	return p, nil
}

// Callback is a scene's callback policy.
type Callback struct {
	Enabled     bool    `json:"enabled" doc:"the client is called back when a task ends"`
	MaxAttempts int     `json:"max_attempts"`
	Backoff     Backoff `json:"backoff"`
}

// Scene is a scene with its whole policy.
type Scene struct {
	ID            int64     `json:"id"`
	GroupID       int64     `json:"group_id"`
	Name          string    `json:"name"`
	Description   string    `json:"description"`
	Enabled       bool      `json:"enabled" doc:"false while paused: its tasks wait"`
	Mode          string    `json:"mode" enum:"LOCAL,REMOTE,LOCAL_REMOTE"`
	LocalAttempts int       `json:"local_attempts"`
	LocalBackoff  Backoff   `json:"local_backoff"`
	MaxAttempts   int       `json:"max_attempts" doc:"remote replays"`
	Backoff       Backoff   `json:"backoff" doc:"between remote replays"`
	Timeout       string    `json:"timeout" doc:"per attempt; 0s means the server's default"`
	Deadline      string    `json:"deadline" doc:"a task's life from its failure; 0s means none"`
	Routing       string    `json:"routing" enum:"round_robin,random,consistent_hash,least_recently_used"`
	RateLimit     int       `json:"rate_limit" doc:"replays per second across the cluster; 0 means no limit"`
	Callback      Callback  `json:"callback"`
	Version       int64     `json:"version" doc:"grows with every change; clients notice edits by it"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

func sceneOut(sc retry.Scene) Scene {
	return Scene{ID: sc.ID, GroupID: sc.GroupID, Name: sc.Name, Description: sc.Description, Enabled: sc.Enabled,
		Mode: string(sc.Mode), LocalAttempts: sc.LocalAttempts, LocalBackoff: backoffOut(sc.LocalBackoff),
		MaxAttempts: sc.MaxAttempts, Backoff: backoffOut(sc.Backoff), Timeout: sc.Timeout.String(),
		Deadline: sc.Deadline.String(), Routing: string(sc.Routing), RateLimit: sc.RateLimit,
		Callback: Callback{Enabled: sc.Callback.Enabled, MaxAttempts: sc.Callback.MaxAttempts, Backoff: backoffOut(sc.Callback.Backoff)},
		Version:  sc.Version, CreatedAt: sc.CreatedAt, UpdatedAt: sc.UpdatedAt}
}

// ScenePolicy is the part of a scene a change sets; absent fields keep their value (the
// default policy's, for a new scene).
type ScenePolicy struct {
	Description   *string  `json:"description,omitempty" maxLength:"512"`
	Enabled       *bool    `json:"enabled,omitempty"`
	Mode          *string  `json:"mode,omitempty" enum:"LOCAL,REMOTE,LOCAL_REMOTE"`
	LocalAttempts *int     `json:"local_attempts,omitempty" doc:"1 to 100; the first call counts"`
	LocalBackoff  *Backoff `json:"local_backoff,omitempty"`
	MaxAttempts   *int     `json:"max_attempts,omitempty" doc:"1 to 1000"`
	Backoff       *Backoff `json:"backoff,omitempty"`
	Timeout       *string  `json:"timeout,omitempty" doc:"a duration up to 24h; 0 means the server's default"`
	Deadline      *string  `json:"deadline,omitempty" doc:"a duration; 0 means none"`
	Routing       *string  `json:"routing,omitempty" enum:"round_robin,random,consistent_hash,least_recently_used"`
	RateLimit     *int     `json:"rate_limit,omitempty" doc:"0 (no limit) to 1000000 per second"`
	Callback      *struct {
		Enabled     *bool    `json:"enabled,omitempty"`
		MaxAttempts *int     `json:"max_attempts,omitempty" doc:"1 to 1000"`
		Backoff     *Backoff `json:"backoff,omitempty"`
	} `json:"callback,omitempty"`
}

// setField sets *dst to *v and records name when the request gave v.
func setField[T any](set *[]string, name string, dst, v *T) {
	if v != nil {
		*dst = *v
		*set = append(*set, name)
	}
}

// apply sets the fields present on sc and checks the result by the scene's own rules; the
// error is a 400 naming the field. It returns the names of the fields it set.
func (p *ScenePolicy) apply(sc *retry.Scene) ([]string, error) {
	var set []string
	mark := func(name string) { set = append(set, name) }
	setField(&set, "description", &sc.Description, p.Description)
	setField(&set, "enabled", &sc.Enabled, p.Enabled)
	if p.Mode != nil {
		sc.Mode = protocol.Mode(*p.Mode)
		mark("mode")
	}
	setField(&set, "local_attempts", &sc.LocalAttempts, p.LocalAttempts)
	setField(&set, "max_attempts", &sc.MaxAttempts, p.MaxAttempts)
	if p.Routing != nil {
		sc.Routing = retry.Routing(*p.Routing)
		mark("routing")
	}
	setField(&set, "rate_limit", &sc.RateLimit, p.RateLimit)
	for _, d := range []struct {
		name string
		v    *string
		dst  *time.Duration
	}{{"timeout", p.Timeout, &sc.Timeout}, {"deadline", p.Deadline, &sc.Deadline}} {
		if d.v == nil {
			continue
		}
		v, err := time.ParseDuration(*d.v)
		if err != nil {
			return set, badField(d.name, fmt.Sprintf("%q is not a duration such as 30s or 2h", *d.v))
		}
		*d.dst = v
		mark(d.name)
	}
	for _, b := range []struct {
		name string
		v    *Backoff
		dst  *backoff.Policy
	}{{"local_backoff", p.LocalBackoff, &sc.LocalBackoff}, {"backoff", p.Backoff, &sc.Backoff}} {
		if b.v == nil {
			continue
		}
		pol, err := b.v.policy(b.name)
		if err != nil {
			return set, err
		}
		*b.dst = pol
		mark(b.name)
	}
	if cb := p.Callback; cb != nil {
		if cb.Enabled != nil {
			sc.Callback.Enabled = *cb.Enabled
			mark("callback.enabled")
		}
		if cb.MaxAttempts != nil {
			sc.Callback.MaxAttempts = *cb.MaxAttempts
			mark("callback.max_attempts")
		}
		if cb.Backoff != nil {
			pol, err := cb.Backoff.policy("callback.backoff")
			if err != nil {
				return set, err
			}
			sc.Callback.Backoff = pol
			mark("callback.backoff")
		}
	}
	return set, sceneInvalid(sc.Validate())
}

// sceneFields maps the start of retry.Scene.Validate's messages to the API's field names.
var sceneFields = []struct{ prefix, field string }{
	{"scene name", "name"}, {"description", "description"}, {"mode", "mode"},
	{"local_attempts", "local_attempts"}, {"local_backoff", "local_backoff"}, {"max_attempts", "max_attempts"},
	{"backoff", "backoff"}, {"timeout", "timeout"}, {"deadline", "deadline"}, {"routing", "routing"},
	{"rate_limit", "rate_limit"}, {"callback max_attempts", "callback.max_attempts"},
	{"callback backoff", "callback.backoff"},
}

// sceneInvalid turns a scene's validation error into a 400 naming the field.
func sceneInvalid(err error) error {
	if err == nil || !errors.Is(err, retry.ErrInvalid) {
		return err
	}
	msg := strings.TrimPrefix(err.Error(), retry.ErrInvalid.Error()+" ")
	for _, f := range sceneFields {
		if strings.HasPrefix(msg, f.prefix) {
			return badField(f.field, strings.TrimLeft(strings.TrimPrefix(msg, f.prefix), ": "))
		}
	}
	return badField("", msg)
}

// SceneOutput answers with one scene.
type SceneOutput struct{ Body Scene }

// SceneList is a page of scenes.
type SceneList struct {
	Body struct {
		Items     []Scene `json:"items"`
		NextAfter int64   `json:"next_after" doc:"pass as after for the next page; 0 when there is none"`
	}
}

// CreateSceneInput is a new scene of group ID: the default policy with the fields given.
type CreateSceneInput struct {
	ID   int64 `path:"id" minimum:"1" doc:"the group"`
	Body struct {
		Name string `json:"name" minLength:"1" maxLength:"64"`
		ScenePolicy
	}
}

// UpdateSceneInput changes a scene's policy; absent fields keep their value.
type UpdateSceneInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body ScenePolicy
}

// MaxPreview bounds the trigger times a preview computes.
const MaxPreview = 50

// PreviewInput is a policy to preview.
type PreviewInput struct {
	Body struct {
		Backoff     Backoff `json:"backoff"`
		MaxAttempts int     `json:"max_attempts,omitempty" minimum:"0" doc:"stop after this many replays (0: count only)"`
		Count       int     `json:"count,omitempty" minimum:"0" maximum:"50" doc:"how many trigger times; default 10, at most 50"`
	}
}

// PreviewOutput is the trigger times a policy gives a task that fails now and at each replay.
type PreviewOutput struct {
	Body struct {
		From  time.Time   `json:"from" doc:"the failure the times count from (the server's now)"`
		Times []time.Time `json:"times" doc:"the n-th replay's time, when each replay fails at the moment it starts"`
	}
}

func (a *API) registerScenes() {
	tags := []string{"scenes"}
	query(a, huma.Operation{OperationID: "scenes-list", Method: http.MethodGet, Path: Prefix + "/groups/{id}/scenes",
		Summary: "List a group's scenes", Description: "By id. Needs viewer of the group's namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404}}, a.listScenes)
	query(a, huma.Operation{OperationID: "scenes-get", Method: http.MethodGet, Path: Prefix + "/scenes/{id}",
		Summary: "Get a scene", Description: "Needs viewer of its namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.getScene)
	mutation(a, huma.Operation{OperationID: "scenes-create", Method: http.MethodPost, Path: Prefix + "/groups/{id}/scenes",
		Summary: "Create a scene", Description: "The default policy with the fields given. Needs operator of the group's namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 404, 409}}, a.createScene)
	mutation(a, huma.Operation{OperationID: "scenes-update", Method: http.MethodPatch, Path: Prefix + "/scenes/{id}",
		Summary: "Edit a scene's policy", Description: "Raises the scene's version; every node and client obeys the change within the " +
			"catalog's TTL. Needs operator of its namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404}}, a.updateScene)
	mutation(a, huma.Operation{OperationID: "scenes-pause", Method: http.MethodPost, Path: Prefix + "/scenes/{id}/pause",
		Summary: "Pause a scene", Description: "Its tasks wait until it is resumed. Needs operator of its namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.pauseScene)
	mutation(a, huma.Operation{OperationID: "scenes-resume", Method: http.MethodPost, Path: Prefix + "/scenes/{id}/resume",
		Summary: "Resume a scene", Description: "Needs operator of its namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.resumeScene)
	// A POST, so it is in the audit log as every POST is, though it changes nothing.
	mutation(a, huma.Operation{OperationID: "scenes-preview", Method: http.MethodPost, Path: Prefix + "/scenes/preview",
		Summary: "Preview a back-off", Description: "The next trigger times the policy gives, computed by the scheduler's own code " +
			"(jitter and random strategies give one draw). Changes nothing.",
		Tags: tags, Security: security, Errors: []int{400, 401}}, a.previewScene)
}

// sceneFor reads a scene and checks the caller's role in its group's namespace.
func (a *API) sceneFor(ctx context.Context, id int64, role auth.Role) (retry.Scene, retry.Group, error) {
	if auth.From(ctx) == nil {
		return retry.Scene{}, retry.Group{}, auth.ErrUnauthenticated
	}
	sc, err := a.store.Scene(ctx, id)
	if err != nil {
		return sc, retry.Group{}, err
	}
	g, err := a.groupFor(ctx, sc.GroupID, role)
	return sc, g, err
}

func (a *API) listScenes(ctx context.Context, in *ListByParentInput) (*SceneList, error) {
	if _, err := a.groupFor(ctx, in.ID, auth.Viewer); err != nil {
		return nil, err
	}
	scs, err := a.store.ScenePage(ctx, in.filter(in.ID))
	if err != nil {
		return nil, err
	}
	out := &SceneList{}
	out.Body.Items = make([]Scene, len(scs))
	for i, sc := range scs {
		out.Body.Items[i] = sceneOut(sc)
	}
	if len(scs) == in.Limit {
		out.Body.NextAfter = scs[len(scs)-1].ID
	}
	return out, nil
}

func (a *API) getScene(ctx context.Context, in *IDInput) (*SceneOutput, error) {
	sc, _, err := a.sceneFor(ctx, in.ID, auth.Viewer)
	if err != nil {
		return nil, err
	}
	return &SceneOutput{Body: sceneOut(sc)}, nil
}

func (a *API) createScene(ctx context.Context, in *CreateSceneInput, ch *Change) (*SceneOutput, error) {
	ch.Target = "scene " + in.Body.Name
	g, err := a.groupFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = g.NamespaceID
	if err != nil {
		return nil, err
	}
	sc := retry.DefaultScene(g.ID, in.Body.Name)
	set, err := in.Body.ScenePolicy.apply(&sc)
	if err != nil {
		return nil, err
	}
	if sc, err = a.store.CreateScene(ctx, sc); err != nil {
		return nil, sceneInvalid(err)
	}
	ch.Target = fmt.Sprintf("scene %d", sc.ID)
	ch.Detail = fmt.Sprintf("group %d, name %s; set %s", g.ID, sc.Name, strings.Join(set, ", "))
	return &SceneOutput{Body: sceneOut(sc)}, nil
}

func (a *API) updateScene(ctx context.Context, in *UpdateSceneInput, ch *Change) (*SceneOutput, error) {
	ch.Target = fmt.Sprintf("scene %d", in.ID)
	sc, g, err := a.sceneFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = g.NamespaceID
	if err != nil {
		return nil, err
	}
	set, err := in.Body.apply(&sc)
	ch.Detail = "set " + strings.Join(set, ", ")
	if err != nil {
		return nil, err
	}
	if sc, err = a.store.UpdateScene(ctx, sc); err != nil {
		return nil, sceneInvalid(err)
	}
	return &SceneOutput{Body: sceneOut(sc)}, nil
}

func (a *API) pauseScene(ctx context.Context, in *IDInput, ch *Change) (*SceneOutput, error) {
	return a.setSceneEnabled(ctx, in.ID, false, ch)
}

func (a *API) resumeScene(ctx context.Context, in *IDInput, ch *Change) (*SceneOutput, error) {
	return a.setSceneEnabled(ctx, in.ID, true, ch)
}

func (a *API) setSceneEnabled(ctx context.Context, id int64, enabled bool, ch *Change) (*SceneOutput, error) {
	ch.Target = fmt.Sprintf("scene %d", id)
	sc, g, err := a.sceneFor(ctx, id, auth.Operator)
	ch.NamespaceID = g.NamespaceID
	if err != nil {
		return nil, err
	}
	ch.Detail = fmt.Sprintf("enabled %t", enabled)
	sc.Enabled = enabled
	if sc, err = a.store.UpdateScene(ctx, sc); err != nil {
		return nil, sceneInvalid(err)
	}
	return &SceneOutput{Body: sceneOut(sc)}, nil
}

func (a *API) previewScene(ctx context.Context, in *PreviewInput, ch *Change) (*PreviewOutput, error) {
	ch.Detail = "preview of a " + in.Body.Backoff.Strategy + " back-off"
	if auth.From(ctx) == nil {
		return nil, auth.ErrUnauthenticated
	}
	pol, err := in.Body.Backoff.policy("backoff")
	if err != nil {
		return nil, err
	}
	b, err := pol.Compile()
	if err != nil {
		return nil, badField("backoff", err.Error())
	}
	n := in.Body.Count
	if n == 0 {
		n = 10
	}
	if m := in.Body.MaxAttempts; m > 0 && m < n {
		n = m
	}
	out := &PreviewOutput{}
	out.Body.From = retry.Truncate(now())
	out.Body.Times = PreviewTimes(b, out.Body.From, n)
	return out, nil
}

// PreviewTimes are the first n replay times of a task that failed at from, when every replay
// fails the moment it starts: the report's first step (retry.FirstDue), then after the k-th
// failed replay the step retry.SettleReplay takes.
func PreviewTimes(b *backoff.Backoff, from time.Time, n int) []time.Time {
	times := make([]time.Time, 0, n)
	if n <= 0 {
		return times
	}
	t := retry.FirstDue(b, from, from)
	times = append(times, t)
	for k := 1; k < n; k++ {
		t = retry.NextReplay(b, k, t)
		times = append(times, t)
	}
	return times
}
