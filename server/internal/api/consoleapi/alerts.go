package consoleapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/alert"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Alerts: channels, rules, silences and the history of messages, per namespace. Viewers read
// everything (channel settings with their secrets blanked); operators change rules and
// silences and send a channel's test message; admins change channels, which hold credentials
// (like API tokens, also an admin's).

// AlertChannel is a channel as the console shows it: its settings with every secret blanked
// ("password": "" and "password_set": true).
type AlertChannel struct {
	ID          int64          `json:"id"`
	NamespaceID int64          `json:"namespace_id"`
	Name        string         `json:"name"`
	Kind        string         `json:"kind" enum:"email,webhook,dingtalk,lark,wecom"`
	Enabled     bool           `json:"enabled"`
	Settings    map[string]any `json:"settings" doc:"the kind's settings; secrets are never returned (each shows as \"\" with <field>_set)"`
	CreatedAt   time.Time      `json:"created_at"`
	UpdatedAt   time.Time      `json:"updated_at"`
}

// AlertChannelOutput answers with one channel.
type AlertChannelOutput struct{ Body AlertChannel }

// AlertChannelList is a namespace's channels.
type AlertChannelList struct {
	Body struct {
		Items []AlertChannel `json:"items"`
	}
}

// CreateAlertChannelInput is a new channel in namespace ID.
type CreateAlertChannelInput struct {
	ID   int64 `path:"id" minimum:"1" doc:"the namespace"`
	Body struct {
		Name     string         `json:"name" minLength:"1" maxLength:"64"`
		Kind     string         `json:"kind" enum:"email,webhook,dingtalk,lark,wecom"`
		Enabled  *bool          `json:"enabled,omitempty" doc:"default true"`
		Settings map[string]any `json:"settings" doc:"email: host, port, tls (none, starttls, tls), username, password, from, to, ca_pem; webhook: url, secret, headers; dingtalk, lark: url, secret; wecom: url"`
	}
}

// UpdateAlertChannelInput changes a channel; absent fields keep their value, and a secret left
// empty in settings keeps its stored value.
type UpdateAlertChannelInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Name     *string        `json:"name,omitempty" minLength:"1" maxLength:"64"`
		Enabled  *bool          `json:"enabled,omitempty"`
		Settings map[string]any `json:"settings,omitempty" doc:"the whole settings; a secret sent empty keeps its stored value (send <field>_set: false to clear it)"`
	}
}

// AlertMessage is one message of the history.
type AlertMessage struct {
	ID          int64          `json:"id"`
	NamespaceID int64          `json:"namespace_id"`
	RuleID      int64          `json:"rule_id" doc:"0 for a test"`
	Rule        string         `json:"rule"`
	Kind        string         `json:"kind" enum:"firing,reminder,resolved,test"`
	ChannelID   int64          `json:"channel_id" doc:"0 when the rule had no enabled channel (status recorded)"`
	Subject     string         `json:"subject"`
	Status      string         `json:"status" enum:"pending,sent,failed,recorded"`
	Error       string         `json:"error" doc:"why the last try failed"`
	Attempts    int            `json:"attempts"`
	NextRetryAt *time.Time     `json:"next_retry_at" doc:"when a pending or failed message is tried again; null when it is not"`
	CreatedAt   time.Time      `json:"created_at"`
	SentAt      *time.Time     `json:"sent_at"`
	Message     map[string]any `json:"message,omitempty" doc:"the message as sent: its items with their figures, errors and links"`
}

func alertMessageOut(m storage.AlertMessage, full bool) AlertMessage {
	out := AlertMessage{ID: m.ID, NamespaceID: m.NamespaceID, RuleID: m.RuleID, Rule: m.RuleName, Kind: m.Kind, ChannelID: m.ChannelID,
		Subject: m.Subject, Status: m.Status, Error: m.Error, Attempts: m.Attempts, NextRetryAt: m.NextRetryAt,
		CreatedAt: m.CreatedAt, SentAt: m.SentAt}
	if full {
		_ = json.Unmarshal(m.Payload, &out.Message)
	}
	return out
}

// AlertMessageOutput answers with one history row.
type AlertMessageOutput struct{ Body AlertMessage }

// AlertMessageList is a page of the history, newest first.
type AlertMessageList struct {
	Body struct {
		Items      []AlertMessage `json:"items"`
		NextBefore int64          `json:"next_before" doc:"pass as before for the next page; 0 when there is none"`
	}
}

// ListAlertMessagesInput selects a page of a namespace's history.
type ListAlertMessagesInput struct {
	ID        int64     `path:"id" minimum:"1" doc:"the namespace"`
	RuleID    int64     `query:"rule_id" minimum:"0" doc:"only this rule's messages"`
	ChannelID int64     `query:"channel_id" minimum:"0" doc:"only the messages to this channel"`
	Status    string    `query:"status" enum:"pending,sent,failed,recorded," doc:"only messages in this status"`
	Since     time.Time `query:"since" doc:"only messages made at or after this time (RFC 3339)"`
	Before    int64     `query:"before" minimum:"0" doc:"the next_before of the previous page"`
	Limit     int       `query:"limit" minimum:"1" maximum:"200" default:"50"`
	Message   bool      `query:"message" doc:"include each message's content"`
}

// AlertRule is a rule as the console shows it, with whether it fires now.
type AlertRule struct {
	ID          int64      `json:"id"`
	NamespaceID int64      `json:"namespace_id"`
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Kind        string     `json:"kind"`
	GroupIDs    []int64    `json:"group_ids" doc:"the groups watched; with scene_ids empty too, the whole namespace"`
	SceneIDs    []int64    `json:"scene_ids" doc:"the scenes watched, besides those of group_ids"`
	Threshold   float64    `json:"threshold"`
	MinVolume   int64      `json:"min_volume"`
	Window      string     `json:"window"`
	For         string     `json:"for"`
	Severity    string     `json:"severity" enum:"critical,warning,info"`
	ChannelIDs  []int64    `json:"channel_ids"`
	Repeat      string     `json:"repeat"`
	Enabled     bool       `json:"enabled"`
	Firing      bool       `json:"firing" doc:"the rule fired at its last evaluation"`
	FiringSince *time.Time `json:"firing_since"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

func alertRuleOut(r storage.AlertRule, st storage.AlertState) AlertRule {
	out := AlertRule{ID: r.ID, NamespaceID: r.NamespaceID, Name: r.Name, Description: r.Description, Kind: r.Kind,
		GroupIDs: nonNil(r.GroupIDs), SceneIDs: nonNil(r.SceneIDs), Threshold: r.Threshold, MinVolume: r.MinVolume,
		Window: r.Window.String(), For: r.For.String(), Severity: r.Severity, ChannelIDs: nonNil(r.ChannelIDs),
		Repeat: r.Repeat.String(), Enabled: r.Enabled, Firing: st.Firing, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	if st.Firing {
		out.FiringSince = st.Since
	}
	return out
}

func nonNil(ids []int64) []int64 {
	if ids == nil {
		return []int64{}
	}
	return ids
}

// AlertRuleFields are the fields a change sets; absent ones keep their value (the kind's
// defaults, for a new rule).
type AlertRuleFields struct {
	Description *string  `json:"description,omitempty" maxLength:"512"`
	GroupIDs    *[]int64 `json:"group_ids,omitempty" doc:"groups of the namespace to watch"`
	SceneIDs    *[]int64 `json:"scene_ids,omitempty" doc:"scenes of the namespace to watch"`
	Threshold   *float64 `json:"threshold,omitempty" doc:"tasks_exhausted, failed_attempts, callbacks_exhausted, backlog: a count (default 1); failure_ratio: a percentage; buckets_unowned: a count of buckets (default 1)"`
	MinVolume   *int64   `json:"min_volume,omitempty" doc:"failure_ratio: the fewest attempts in the window for the ratio to count (default 10)"`
	Window      *string  `json:"window,omitempty" doc:"tasks_exhausted, failed_attempts, failure_ratio, callbacks_exhausted: the evaluation window, 1m to 24h (default 5m)"`
	For         *string  `json:"for,omitempty" doc:"oldest_waiting: how long overdue; no_live_instance, node_lost, buckets_unowned: how long the condition lasts (default 5m)"`
	Severity    *string  `json:"severity,omitempty" enum:"critical,warning,info"`
	ChannelIDs  *[]int64 `json:"channel_ids,omitempty" doc:"channels of the namespace to tell; none records the messages in the history only"`
	Repeat      *string  `json:"repeat,omitempty" doc:"a reminder this often while the rule fires; 0 sends none"`
	Enabled     *bool    `json:"enabled,omitempty"`
}

// AlertRuleOutput answers with one rule.
type AlertRuleOutput struct{ Body AlertRule }

// AlertRuleList is a namespace's rules.
type AlertRuleList struct {
	Body struct {
		Items []AlertRule `json:"items"`
	}
}

// CreateAlertRuleInput is a new rule in namespace ID.
type CreateAlertRuleInput struct {
	ID   int64 `path:"id" minimum:"1" doc:"the namespace"`
	Body struct {
		Name string `json:"name" minLength:"1" maxLength:"64"`
		Kind string `json:"kind" enum:"tasks_exhausted,failed_attempts,failure_ratio,backlog,oldest_waiting,no_live_instance,callbacks_exhausted,node_lost,buckets_unowned"`
		AlertRuleFields
	}
}

// UpdateAlertRuleInput changes a rule; absent fields keep their value.
type UpdateAlertRuleInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Name *string `json:"name,omitempty" minLength:"1" maxLength:"64"`
		Kind *string `json:"kind,omitempty" enum:"tasks_exhausted,failed_attempts,failure_ratio,backlog,oldest_waiting,no_live_instance,callbacks_exhausted,node_lost,buckets_unowned"`
		AlertRuleFields
	}
}

// AlertSilence is a silence.
type AlertSilence struct {
	ID          int64     `json:"id"`
	NamespaceID int64     `json:"namespace_id"`
	RuleID      int64     `json:"rule_id" doc:"0: every rule of the namespace"`
	SceneID     int64     `json:"scene_id" doc:"0: every subject"`
	StartsAt    time.Time `json:"starts_at"`
	EndsAt      time.Time `json:"ends_at"`
	Reason      string    `json:"reason"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	Active      bool      `json:"active" doc:"in force now"`
}

func alertSilenceOut(s storage.AlertSilence, at time.Time) AlertSilence {
	return AlertSilence{ID: s.ID, NamespaceID: s.NamespaceID, RuleID: s.RuleID, SceneID: s.SceneID, StartsAt: s.StartsAt,
		EndsAt: s.EndsAt, Reason: s.Reason, CreatedBy: s.CreatedBy, CreatedAt: s.CreatedAt,
		Active: !s.StartsAt.After(at) && s.EndsAt.After(at)}
}

// AlertSilenceOutput answers with one silence.
type AlertSilenceOutput struct{ Body AlertSilence }

// AlertSilenceList is a namespace's silences.
type AlertSilenceList struct {
	Body struct {
		Items []AlertSilence `json:"items"`
	}
}

// ListAlertSilencesInput lists a namespace's silences.
type ListAlertSilencesInput struct {
	ID  int64 `path:"id" minimum:"1" doc:"the namespace"`
	All bool  `query:"all" doc:"also the silences that have ended"`
}

// AlertSilenceFields are a silence's fields; absent ones keep their value (a new silence
// starts now).
type AlertSilenceFields struct {
	RuleID   *int64     `json:"rule_id,omitempty" minimum:"0" doc:"a rule of the namespace; 0 or absent: every rule"`
	SceneID  *int64     `json:"scene_id,omitempty" minimum:"0" doc:"a scene of the namespace; 0 or absent: every subject"`
	StartsAt *time.Time `json:"starts_at,omitempty" doc:"default now"`
	EndsAt   *time.Time `json:"ends_at,omitempty" doc:"the end; or give duration"`
	Duration *string    `json:"duration,omitempty" doc:"how long from starts_at, e.g. 2h, instead of ends_at"`
	Reason   *string    `json:"reason,omitempty" maxLength:"512"`
}

// CreateAlertSilenceInput is a new silence in namespace ID.
type CreateAlertSilenceInput struct {
	ID   int64 `path:"id" minimum:"1" doc:"the namespace"`
	Body AlertSilenceFields
}

// UpdateAlertSilenceInput changes a silence (to end it now, set ends_at to now).
type UpdateAlertSilenceInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body AlertSilenceFields
}

// TestAlertChannelOutput is the outcome of a test message.
type TestAlertChannelOutput struct {
	Body struct {
		Sent    bool         `json:"sent"`
		Error   string       `json:"error" doc:"why it was not sent"`
		Message AlertMessage `json:"message" doc:"the history row that records it"`
	}
}

func (a *API) registerAlerts() {
	tags := []string{"alerts"}
	chTags := []string{"alert channels"}
	// Channels.
	query(a, huma.Operation{OperationID: "alert-channels-list", Method: http.MethodGet, Path: Prefix + "/namespaces/{id}/alert-channels",
		Summary: "List a namespace's alert channels", Description: "Secrets are blanked. Needs viewer of the namespace.",
		Tags: chTags, Security: security, Errors: []int{401, 403, 404}}, a.listAlertChannels)
	query(a, huma.Operation{OperationID: "alert-channels-get", Method: http.MethodGet, Path: Prefix + "/alert-channels/{id}",
		Summary: "Get an alert channel", Description: "Secrets are blanked. Needs viewer of its namespace.",
		Tags: chTags, Security: security, Errors: []int{401, 403, 404}}, a.getAlertChannel)
	mutation(a, huma.Operation{OperationID: "alert-channels-create", Method: http.MethodPost, Path: Prefix + "/namespaces/{id}/alert-channels",
		Summary: "Create an alert channel", Description: "The settings are checked for the kind and stored sealed. Needs admin of the namespace.",
		Tags: chTags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 404, 409}}, a.createAlertChannel)
	mutation(a, huma.Operation{OperationID: "alert-channels-update", Method: http.MethodPatch, Path: Prefix + "/alert-channels/{id}",
		Summary: "Edit an alert channel", Description: "A secret left empty keeps its stored value. Needs admin of its namespace.",
		Tags: chTags, Security: security, Errors: []int{400, 401, 403, 404, 409}}, a.updateAlertChannel)
	mutation(a, huma.Operation{OperationID: "alert-channels-delete", Method: http.MethodDelete, Path: Prefix + "/alert-channels/{id}",
		Summary: "Delete an alert channel", Description: "Rules that name it skip it. Needs admin of its namespace.",
		Tags: chTags, Security: security, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404}}, a.deleteAlertChannel)
	mutation(a, huma.Operation{OperationID: "alert-channels-test", Method: http.MethodPost, Path: Prefix + "/alert-channels/{id}/test",
		Summary: "Send a test message", Description: "Sends a test message through the channel now and answers how it went; it is " +
			"recorded in the history. Needs operator of its namespace.",
		Tags: chTags, Security: security, Errors: []int{401, 403, 404}}, a.testAlertChannel)
	// Rules.
	query(a, huma.Operation{OperationID: "alert-rules-list", Method: http.MethodGet, Path: Prefix + "/namespaces/{id}/alert-rules",
		Summary: "List a namespace's alert rules", Description: "With whether each fires. Needs viewer of the namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.listAlertRules)
	query(a, huma.Operation{OperationID: "alert-rules-get", Method: http.MethodGet, Path: Prefix + "/alert-rules/{id}",
		Summary: "Get an alert rule", Description: "Needs viewer of its namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.getAlertRule)
	mutation(a, huma.Operation{OperationID: "alert-rules-create", Method: http.MethodPost, Path: Prefix + "/namespaces/{id}/alert-rules",
		Summary: "Create an alert rule", Description: "The fields the kind does not read are cleared; its groups, scenes and channels " +
			"must be the namespace's. Needs operator of the namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 404, 409}}, a.createAlertRule)
	mutation(a, huma.Operation{OperationID: "alert-rules-update", Method: http.MethodPatch, Path: Prefix + "/alert-rules/{id}",
		Summary: "Edit an alert rule", Description: "Needs operator of its namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404, 409}}, a.updateAlertRule)
	mutation(a, huma.Operation{OperationID: "alert-rules-delete", Method: http.MethodDelete, Path: Prefix + "/alert-rules/{id}",
		Summary: "Delete an alert rule", Description: "Its history stays. Needs operator of its namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404}}, a.deleteAlertRule)
	// Silences.
	query(a, huma.Operation{OperationID: "alert-silences-list", Method: http.MethodGet, Path: Prefix + "/namespaces/{id}/alert-silences",
		Summary: "List a namespace's silences", Description: "Those not ended yet (all=true: every one). Needs viewer of the namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.listAlertSilences)
	mutation(a, huma.Operation{OperationID: "alert-silences-create", Method: http.MethodPost, Path: Prefix + "/namespaces/{id}/alert-silences",
		Summary: "Silence alerts", Description: "No message of the namespace's rules (or one rule), about any subject (or one scene), " +
			"while the silence is in force. Needs operator of the namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 404}}, a.createAlertSilence)
	mutation(a, huma.Operation{OperationID: "alert-silences-update", Method: http.MethodPatch, Path: Prefix + "/alert-silences/{id}",
		Summary: "Edit a silence", Description: "Set ends_at to now to end it. Needs operator of its namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404}}, a.updateAlertSilence)
	mutation(a, huma.Operation{OperationID: "alert-silences-delete", Method: http.MethodDelete, Path: Prefix + "/alert-silences/{id}",
		Summary: "Delete a silence", Description: "Needs operator of its namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404}}, a.deleteAlertSilence)
	// History.
	query(a, huma.Operation{OperationID: "alert-messages-list", Method: http.MethodGet, Path: Prefix + "/namespaces/{id}/alert-messages",
		Summary: "The history of alert messages", Description: "Every message to every channel, sent or failed with its reason, newest first. " +
			"Needs viewer of the namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404}}, a.listAlertMessages)
}

// channels returns the sealer, or a 503 when this server has none.
func (a *API) channels() (*alert.Channels, error) {
	if a.alertChannels == nil {
		return nil, huma.NewError(http.StatusServiceUnavailable, "alert channels are not available on this server")
	}
	return a.alertChannels, nil
}

func (a *API) channelOut(ch storage.AlertChannel) AlertChannel {
	out := AlertChannel{ID: ch.ID, NamespaceID: ch.NamespaceID, Name: ch.Name, Kind: ch.Kind, Enabled: ch.Enabled,
		Settings: map[string]any{}, CreatedAt: ch.CreatedAt, UpdatedAt: ch.UpdatedAt}
	if a.alertChannels != nil {
		if red, err := a.alertChannels.Redacted(ch); err == nil {
			_ = json.Unmarshal(red, &out.Settings)
		} else {
			a.log.Warn("alert channel settings unreadable", "channel", ch.ID, "err", err)
		}
	}
	return out
}

// alertChannelFor reads a channel and checks the caller's role in its namespace.
func (a *API) alertChannelFor(ctx context.Context, id int64, role auth.Role) (storage.AlertChannel, error) {
	if auth.From(ctx) == nil {
		return storage.AlertChannel{}, auth.ErrUnauthenticated
	}
	ch, err := a.store.AlertChannel(ctx, id)
	if err != nil {
		return ch, err
	}
	_, err = auth.Require(ctx, ch.NamespaceID, role)
	return ch, err
}

func validName(kind, name string) error {
	if err := retry.ValidateName(kind, name); err != nil {
		return badField("name", strings.TrimPrefix(err.Error(), retry.ErrInvalid.Error()+" "))
	}
	return nil
}

func (a *API) listAlertChannels(ctx context.Context, in *IDInput) (*AlertChannelList, error) {
	if _, err := a.namespaceFor(ctx, in.ID, auth.Viewer); err != nil {
		return nil, err
	}
	chs, err := a.store.ListAlertChannels(ctx, []int64{in.ID})
	if err != nil {
		return nil, err
	}
	out := &AlertChannelList{}
	out.Body.Items = make([]AlertChannel, len(chs))
	for i, ch := range chs {
		out.Body.Items[i] = a.channelOut(ch)
	}
	return out, nil
}

func (a *API) getAlertChannel(ctx context.Context, in *IDInput) (*AlertChannelOutput, error) {
	ch, err := a.alertChannelFor(ctx, in.ID, auth.Viewer)
	if err != nil {
		return nil, err
	}
	return &AlertChannelOutput{Body: a.channelOut(ch)}, nil
}

func settingsJSON(m map[string]any) (json.RawMessage, error) {
	if m == nil {
		return nil, badField("settings", "required: a JSON object")
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, badField("settings", err.Error())
	}
	return b, nil
}

func (a *API) createAlertChannel(ctx context.Context, in *CreateAlertChannelInput, ch *Change) (*AlertChannelOutput, error) {
	ch.Target, ch.NamespaceID = "alert channel "+in.Body.Name, in.ID
	if _, err := a.namespaceFor(ctx, in.ID, auth.Admin); err != nil {
		return nil, err
	}
	chans, err := a.channels()
	if err != nil {
		return nil, err
	}
	if err := validName("alert channel", in.Body.Name); err != nil {
		return nil, err
	}
	raw, err := settingsJSON(in.Body.Settings)
	if err != nil {
		return nil, err
	}
	sealed, err := chans.Prepare(in.Body.Kind, nil, raw)
	if err != nil {
		return nil, badField("settings", err.Error())
	}
	enabled := in.Body.Enabled == nil || *in.Body.Enabled
	c, err := a.store.CreateAlertChannel(ctx, storage.AlertChannel{NamespaceID: in.ID, Name: in.Body.Name, Kind: in.Body.Kind,
		Settings: sealed, Enabled: enabled})
	if err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("alert channel %d", c.ID)
	ch.Detail = fmt.Sprintf("name %s, kind %s", c.Name, c.Kind)
	return &AlertChannelOutput{Body: a.channelOut(c)}, nil
}

func (a *API) updateAlertChannel(ctx context.Context, in *UpdateAlertChannelInput, ch *Change) (*AlertChannelOutput, error) {
	ch.Target = fmt.Sprintf("alert channel %d", in.ID)
	c, err := a.alertChannelFor(ctx, in.ID, auth.Admin)
	ch.NamespaceID = c.NamespaceID
	if err != nil {
		return nil, err
	}
	chans, err := a.channels()
	if err != nil {
		return nil, err
	}
	var set []string
	if in.Body.Name != nil {
		if err := validName("alert channel", *in.Body.Name); err != nil {
			return nil, err
		}
		c.Name = *in.Body.Name
		set = append(set, "name")
	}
	if in.Body.Enabled != nil {
		c.Enabled = *in.Body.Enabled
		set = append(set, "enabled")
	}
	if in.Body.Settings != nil {
		raw, err := settingsJSON(in.Body.Settings)
		if err != nil {
			return nil, err
		}
		prev, err := chans.Open(c)
		if err != nil {
			return nil, err
		}
		if c.Settings, err = chans.Prepare(c.Kind, prev, raw); err != nil {
			return nil, badField("settings", err.Error())
		}
		set = append(set, "settings")
	}
	ch.Detail = "set " + strings.Join(set, ", ")
	if c, err = a.store.UpdateAlertChannel(ctx, c); err != nil {
		return nil, err
	}
	return &AlertChannelOutput{Body: a.channelOut(c)}, nil
}

func (a *API) deleteAlertChannel(ctx context.Context, in *IDInput, ch *Change) (*Empty, error) {
	ch.Target = fmt.Sprintf("alert channel %d", in.ID)
	c, err := a.alertChannelFor(ctx, in.ID, auth.Admin)
	ch.NamespaceID = c.NamespaceID
	if err != nil {
		return nil, err
	}
	if err := a.store.DeleteAlertChannel(ctx, c.ID); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

func (a *API) testAlertChannel(ctx context.Context, in *IDInput, ch *Change) (*TestAlertChannelOutput, error) {
	ch.Target = fmt.Sprintf("alert channel %d", in.ID)
	c, err := a.alertChannelFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = c.NamespaceID
	if err != nil {
		return nil, err
	}
	if a.alerts == nil {
		return nil, huma.NewError(http.StatusServiceUnavailable, "alerts are not available on this server")
	}
	ns, err := a.store.Namespace(ctx, c.NamespaceID)
	if err != nil {
		return nil, err
	}
	m, err := a.alerts.SendTest(ctx, c, ns.Name, auth.From(ctx).Actor())
	if err != nil {
		return nil, err
	}
	out := &TestAlertChannelOutput{}
	out.Body.Sent, out.Body.Error, out.Body.Message = m.Status == storage.AlertSent, m.Error, alertMessageOut(m, false)
	ch.Detail = "test message " + m.Status
	return out, nil
}

// rule checks a rule against its namespace: the fields of its kind, and its groups, scenes and
// channels the namespace's own.
func (a *API) checkRule(ctx context.Context, r *storage.AlertRule) error {
	if err := validName("alert rule", r.Name); err != nil {
		return err
	}
	if err := alert.Normalize(r); err != nil {
		if fe, ok := alert.IsFieldError(err); ok {
			return badField(fe.Field, fe.Reason)
		}
		return err
	}
	scenes, err := a.store.AlertScenes(ctx, r.NamespaceID)
	if err != nil {
		return err
	}
	groups, sceneSet := map[int64]bool{}, map[int64]bool{}
	for _, sc := range scenes {
		groups[sc.GroupID], sceneSet[sc.ID] = true, true
	}
	if len(r.GroupIDs) > 0 {
		gs, err := a.store.GroupPage(ctx, storage.CatalogFilter{Parent: r.NamespaceID, Limit: 10000})
		if err != nil {
			return err
		}
		for _, g := range gs {
			groups[g.ID] = true
		}
	}
	for _, id := range r.GroupIDs {
		if !groups[id] {
			return badField("group_ids", fmt.Sprintf("group %d is not in the namespace", id))
		}
	}
	for _, id := range r.SceneIDs {
		if !sceneSet[id] {
			return badField("scene_ids", fmt.Sprintf("scene %d is not in the namespace", id))
		}
	}
	for _, id := range r.ChannelIDs {
		c, err := a.store.AlertChannel(ctx, id)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && c.NamespaceID != r.NamespaceID) {
			return badField("channel_ids", fmt.Sprintf("channel %d is not in the namespace", id))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// apply sets the fields present on r and returns their names.
func (f *AlertRuleFields) apply(r *storage.AlertRule) ([]string, error) {
	var set []string
	setField(&set, "description", &r.Description, f.Description)
	setField(&set, "threshold", &r.Threshold, f.Threshold)
	setField(&set, "min_volume", &r.MinVolume, f.MinVolume)
	setField(&set, "severity", &r.Severity, f.Severity)
	setField(&set, "enabled", &r.Enabled, f.Enabled)
	for _, l := range []struct {
		name string
		v    *[]int64
		dst  *[]int64
	}{{"group_ids", f.GroupIDs, &r.GroupIDs}, {"scene_ids", f.SceneIDs, &r.SceneIDs}, {"channel_ids", f.ChannelIDs, &r.ChannelIDs}} {
		if l.v != nil {
			ids := slices.Clone(*l.v)
			slices.Sort(ids)
			*l.dst = slices.Compact(ids)
			set = append(set, l.name)
		}
	}
	for _, d := range []struct {
		name string
		v    *string
		dst  *time.Duration
	}{{"window", f.Window, &r.Window}, {"for", f.For, &r.For}, {"repeat", f.Repeat, &r.Repeat}} {
		if d.v == nil {
			continue
		}
		v, err := time.ParseDuration(*d.v)
		if err != nil {
			return set, badField(d.name, fmt.Sprintf("%q is not a duration such as 30s, 5m or 2h", *d.v))
		}
		*d.dst = v
		set = append(set, d.name)
	}
	return set, nil
}

func (a *API) ruleState(ctx context.Context, id int64) storage.AlertState {
	states, err := a.store.AlertStates(ctx)
	if err != nil {
		return storage.AlertState{}
	}
	return states[id]
}

func (a *API) alertRuleFor(ctx context.Context, id int64, role auth.Role) (storage.AlertRule, error) {
	if auth.From(ctx) == nil {
		return storage.AlertRule{}, auth.ErrUnauthenticated
	}
	r, err := a.store.AlertRule(ctx, id)
	if err != nil {
		return r, err
	}
	_, err = auth.Require(ctx, r.NamespaceID, role)
	return r, err
}

func (a *API) listAlertRules(ctx context.Context, in *IDInput) (*AlertRuleList, error) {
	if _, err := a.namespaceFor(ctx, in.ID, auth.Viewer); err != nil {
		return nil, err
	}
	rules, err := a.store.ListAlertRules(ctx, []int64{in.ID}, false)
	if err != nil {
		return nil, err
	}
	states, err := a.store.AlertStates(ctx)
	if err != nil {
		return nil, err
	}
	out := &AlertRuleList{}
	out.Body.Items = make([]AlertRule, len(rules))
	for i, r := range rules {
		out.Body.Items[i] = alertRuleOut(r, states[r.ID])
	}
	return out, nil
}

func (a *API) getAlertRule(ctx context.Context, in *IDInput) (*AlertRuleOutput, error) {
	r, err := a.alertRuleFor(ctx, in.ID, auth.Viewer)
	if err != nil {
		return nil, err
	}
	return &AlertRuleOutput{Body: alertRuleOut(r, a.ruleState(ctx, r.ID))}, nil
}

func (a *API) createAlertRule(ctx context.Context, in *CreateAlertRuleInput, ch *Change) (*AlertRuleOutput, error) {
	ch.Target, ch.NamespaceID = "alert rule "+in.Body.Name, in.ID
	if _, err := a.namespaceFor(ctx, in.ID, auth.Operator); err != nil {
		return nil, err
	}
	r := storage.AlertRule{NamespaceID: in.ID, Name: in.Body.Name, Kind: in.Body.Kind, Enabled: true}
	set, err := in.Body.AlertRuleFields.apply(&r)
	if err != nil {
		return nil, err
	}
	if err := a.checkRule(ctx, &r); err != nil {
		return nil, err
	}
	if r, err = a.store.CreateAlertRule(ctx, r); err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("alert rule %d", r.ID)
	ch.Detail = fmt.Sprintf("name %s, kind %s; set %s", r.Name, r.Kind, strings.Join(set, ", "))
	return &AlertRuleOutput{Body: alertRuleOut(r, storage.AlertState{})}, nil
}

func (a *API) updateAlertRule(ctx context.Context, in *UpdateAlertRuleInput, ch *Change) (*AlertRuleOutput, error) {
	ch.Target = fmt.Sprintf("alert rule %d", in.ID)
	r, err := a.alertRuleFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = r.NamespaceID
	if err != nil {
		return nil, err
	}
	var set []string
	setField(&set, "name", &r.Name, in.Body.Name)
	setField(&set, "kind", &r.Kind, in.Body.Kind)
	more, err := in.Body.AlertRuleFields.apply(&r)
	set = append(set, more...)
	ch.Detail = "set " + strings.Join(set, ", ")
	if err != nil {
		return nil, err
	}
	if err := a.checkRule(ctx, &r); err != nil {
		return nil, err
	}
	if r, err = a.store.UpdateAlertRule(ctx, r); err != nil {
		return nil, err
	}
	return &AlertRuleOutput{Body: alertRuleOut(r, a.ruleState(ctx, r.ID))}, nil
}

func (a *API) deleteAlertRule(ctx context.Context, in *IDInput, ch *Change) (*Empty, error) {
	ch.Target = fmt.Sprintf("alert rule %d", in.ID)
	r, err := a.alertRuleFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = r.NamespaceID
	if err != nil {
		return nil, err
	}
	if err := a.store.DeleteAlertRule(ctx, r.ID); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

func (a *API) listAlertSilences(ctx context.Context, in *ListAlertSilencesInput) (*AlertSilenceList, error) {
	if _, err := a.namespaceFor(ctx, in.ID, auth.Viewer); err != nil {
		return nil, err
	}
	at := now()
	after := at
	if in.All {
		after = time.Time{}
	}
	sis, err := a.store.ListAlertSilences(ctx, []int64{in.ID}, after)
	if err != nil {
		return nil, err
	}
	out := &AlertSilenceList{}
	out.Body.Items = make([]AlertSilence, len(sis))
	for i, s := range sis {
		out.Body.Items[i] = alertSilenceOut(s, at)
	}
	return out, nil
}

// apply sets the silence's fields present and checks them against its namespace.
func (a *API) applySilence(ctx context.Context, f *AlertSilenceFields, s *storage.AlertSilence) ([]string, error) {
	var set []string
	setField(&set, "rule_id", &s.RuleID, f.RuleID)
	setField(&set, "scene_id", &s.SceneID, f.SceneID)
	setField(&set, "starts_at", &s.StartsAt, f.StartsAt)
	setField(&set, "ends_at", &s.EndsAt, f.EndsAt)
	setField(&set, "reason", &s.Reason, f.Reason)
	if f.Duration != nil {
		if f.EndsAt != nil {
			return set, badField("duration", "give ends_at or duration, not both")
		}
		d, err := time.ParseDuration(*f.Duration)
		if err != nil || d <= 0 {
			return set, badField("duration", fmt.Sprintf("%q is not a positive duration such as 30m or 2h", *f.Duration))
		}
		s.EndsAt = s.StartsAt.Add(d)
		set = append(set, "ends_at")
	}
	if s.EndsAt.IsZero() {
		return set, badField("ends_at", "required: give ends_at or duration")
	}
	if s.EndsAt.Before(s.StartsAt) {
		return set, badField("ends_at", "must not be before starts_at")
	}
	if s.RuleID != 0 {
		r, err := a.store.AlertRule(ctx, s.RuleID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && r.NamespaceID != s.NamespaceID) {
			return set, badField("rule_id", fmt.Sprintf("rule %d is not in the namespace", s.RuleID))
		}
		if err != nil {
			return set, err
		}
	}
	if s.SceneID != 0 {
		scenes, err := a.store.AlertScenes(ctx, s.NamespaceID)
		if err != nil {
			return set, err
		}
		if !slices.ContainsFunc(scenes, func(sc storage.AlertScene) bool { return sc.ID == s.SceneID }) {
			return set, badField("scene_id", fmt.Sprintf("scene %d is not in the namespace", s.SceneID))
		}
	}
	return set, nil
}

func (a *API) createAlertSilence(ctx context.Context, in *CreateAlertSilenceInput, ch *Change) (*AlertSilenceOutput, error) {
	ch.Target, ch.NamespaceID = "alert silence", in.ID
	if _, err := a.namespaceFor(ctx, in.ID, auth.Operator); err != nil {
		return nil, err
	}
	s := storage.AlertSilence{NamespaceID: in.ID, StartsAt: now(), CreatedBy: auth.From(ctx).Actor()}
	set, err := a.applySilence(ctx, &in.Body, &s)
	if err != nil {
		return nil, err
	}
	if s, err = a.store.CreateAlertSilence(ctx, s); err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("alert silence %d", s.ID)
	ch.Detail = fmt.Sprintf("rule %d, scene %d, until %s; set %s", s.RuleID, s.SceneID, s.EndsAt.Format(time.RFC3339), strings.Join(set, ", "))
	return &AlertSilenceOutput{Body: alertSilenceOut(s, now())}, nil
}

func (a *API) alertSilenceFor(ctx context.Context, id int64, role auth.Role) (storage.AlertSilence, error) {
	if auth.From(ctx) == nil {
		return storage.AlertSilence{}, auth.ErrUnauthenticated
	}
	s, err := a.store.AlertSilence(ctx, id)
	if err != nil {
		return s, err
	}
	_, err = auth.Require(ctx, s.NamespaceID, role)
	return s, err
}

func (a *API) updateAlertSilence(ctx context.Context, in *UpdateAlertSilenceInput, ch *Change) (*AlertSilenceOutput, error) {
	ch.Target = fmt.Sprintf("alert silence %d", in.ID)
	s, err := a.alertSilenceFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = s.NamespaceID
	if err != nil {
		return nil, err
	}
	set, err := a.applySilence(ctx, &in.Body, &s)
	ch.Detail = "set " + strings.Join(set, ", ")
	if err != nil {
		return nil, err
	}
	if s, err = a.store.UpdateAlertSilence(ctx, s); err != nil {
		return nil, err
	}
	return &AlertSilenceOutput{Body: alertSilenceOut(s, now())}, nil
}

func (a *API) deleteAlertSilence(ctx context.Context, in *IDInput, ch *Change) (*Empty, error) {
	ch.Target = fmt.Sprintf("alert silence %d", in.ID)
	s, err := a.alertSilenceFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = s.NamespaceID
	if err != nil {
		return nil, err
	}
	if err := a.store.DeleteAlertSilence(ctx, s.ID); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

func (a *API) listAlertMessages(ctx context.Context, in *ListAlertMessagesInput) (*AlertMessageList, error) {
	if _, err := a.namespaceFor(ctx, in.ID, auth.Viewer); err != nil {
		return nil, err
	}
	ms, err := a.store.ListAlertMessages(ctx, storage.AlertMessageFilter{NamespaceIDs: []int64{in.ID}, RuleID: in.RuleID,
		ChannelID: in.ChannelID, Status: in.Status, Since: in.Since, Before: in.Before}, in.Limit)
	if err != nil {
		return nil, err
	}
	out := &AlertMessageList{}
	out.Body.Items = make([]AlertMessage, len(ms))
	for i, m := range ms {
		out.Body.Items[i] = alertMessageOut(m, in.Message)
	}
	if len(ms) == in.Limit {
		out.Body.NextBefore = ms[len(ms)-1].ID
	}
	return out, nil
}
