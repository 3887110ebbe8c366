// Package config reads the server's configuration: defaults, then a YAML file, then
// RETRYHUB_* environment variables, each overriding the one before. Unknown keys, bad values
// and impossible combinations stop start-up with a message that names the key.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole server configuration. The YAML keys are the field tags; the environment
// variable of a key is RETRYHUB_ followed by its path in upper case with '.' as '_', for
// example database.dsn is RETRYHUB_DATABASE_DSN.
type Config struct {
	Server     Server     `yaml:"server"`
	Database   Database   `yaml:"database"`
	Scheduler  Scheduler  `yaml:"scheduler"`
	Dispatch   Dispatch   `yaml:"dispatch"`
	Retention  Retention  `yaml:"retention"`
	Log        Log        `yaml:"log"`
	Bootstrap  Bootstrap  `yaml:"bootstrap"`
	ClientAPI  ClientAPI  `yaml:"client_api"`
	Catalog    Catalog    `yaml:"catalog"`
	ConsoleAPI ConsoleAPI `yaml:"console"`
	Auth       Auth       `yaml:"auth"`
	Alert      Alert      `yaml:"alert"`
	Metrics    Metrics    `yaml:"metrics"`
}

// Server is the HTTP server and this node's identity.
type Server struct {
	// Listen is the address of the console and the client API.
	Listen string `yaml:"listen"`
	// NodeID names this node in the cluster; empty means host name, process id and a random
	// suffix.
	NodeID string `yaml:"node_id"`
	// Advertise is how other nodes and operators reach this node; empty means Listen.
	Advertise string `yaml:"advertise"`
	// ShutdownTimeout bounds a graceful shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLSCertFile and TLSKeyFile, both PEM, make the node serve HTTPS instead of HTTP; set both
	// or neither. The certificate file may hold the chain after the node's certificate.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// PublicURL is the console's address as operators reach it (https://retryhub.example.com),
	// for the links in alert messages; empty sends messages without links.
	PublicURL string `yaml:"public_url"`
	// MaxConnections bounds the client connections the node holds open: at the bound it
	// closes its idle keep-alive connections and keeps no new ones idle until it is back
	// under three quarters of it; connections past the bound wait to be accepted. Each costs
	// some 20 KiB, so the bound keeps a flood of connections from growing the node's memory.
	MaxConnections int `yaml:"max_connections"`
}

// Database is the store every node shares.
type Database struct {
	// DSN is "sqlite://path/to/file.db" (the embedded default) or a MySQL DSN, either
	// "mysql://user:pass@tcp(host:3306)/db" or the driver's own "user:pass@tcp(host:3306)/db".
	DSN          string        `yaml:"dsn"`
	MaxOpenConns int           `yaml:"max_open_conns"`
	MaxIdleConns int           `yaml:"max_idle_conns"`
	ConnMaxLife  time.Duration `yaml:"conn_max_lifetime"`
	// SlowQuery logs queries slower than this at warn level; zero turns it off.
	SlowQuery time.Duration `yaml:"slow_query"`
}

// Scheduler is how nodes split and claim the work.
type Scheduler struct {
	// Buckets is the number of buckets tasks are spread over. It is fixed for the life of a
	// database: a node whose setting differs from the database's refuses to start.
	Buckets int `yaml:"buckets"`
	// Tick is the claim cron's spec (robfig/cron with seconds); the default claims every second.
	Tick string `yaml:"tick"`
	// Lookahead claims tasks due within this time after the tick, so they fire on time; a round
	// also claims what falls due until just past the next tick (250ms, or twice the last
	// round's time, at most one tick more), so a task due right after a tick fires on time too.
	Lookahead time.Duration `yaml:"lookahead"`
	// ClaimBatch bounds the tasks claimed per statement.
	ClaimBatch int `yaml:"claim_batch"`
	// ClaimTimeout is how long a claim holds a task, beyond its due time and the attempt's own
	// timeout, before the sweeper may take the task back.
	ClaimTimeout time.Duration `yaml:"claim_timeout"`
	// HeartbeatInterval is how often a node refreshes its heartbeat and bucket leases.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// NodeTTL is how long a node without a heartbeat still counts as live.
	NodeTTL time.Duration `yaml:"node_ttl"`
	// LeaseDuration is how long a bucket lease, or the leadership of the singleton work, lasts
	// without renewal.
	LeaseDuration time.Duration `yaml:"lease_duration"`
	// SweepInterval is how often the sweeper looks for running tasks past their deadline, and
	// (on the leader) for held tasks to make waiting again.
	SweepInterval time.Duration `yaml:"sweep_interval"`
}

// Dispatch is how replays reach client instances.
type Dispatch struct {
	// Concurrency bounds the calls in flight from this node.
	Concurrency int `yaml:"concurrency"`
	// QueueSize bounds the claimed tasks waiting in memory for their time or a free worker.
	QueueSize int `yaml:"queue_size"`
	// MaxQueuedBytes bounds the arguments' bytes of the claimed tasks held in memory (waiting,
	// queued or in flight); zero means no bound beyond QueueSize.
	MaxQueuedBytes int64 `yaml:"max_queued_bytes"`
	// DefaultTimeout is the attempt timeout of scenes that set none.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// InstanceTTL is how long a client instance without a heartbeat stays listed.
	InstanceTTL time.Duration `yaml:"instance_ttl"`
	// InstanceHeartbeat is the heartbeat interval the server asks of clients.
	InstanceHeartbeat time.Duration `yaml:"instance_heartbeat"`
	// NoInstanceDelay is how long a task waits again when no instance of its group can be
	// reached (a replay whose group has no live instance at all is held instead).
	NoInstanceDelay time.Duration `yaml:"no_instance_delay"`
	// BusyDelay is how long a task waits again when every instance answered "busy".
	BusyDelay time.Duration `yaml:"busy_delay"`
	// PausedDelay is how long a callback waits before it is looked at again when its scene is
	// paused or its group or namespace disabled (replays are held instead).
	PausedDelay time.Duration `yaml:"paused_delay"`
	// SettleBatch and SettleInterval bound how many results are written per statement and how
	// long a result waits to be written.
	SettleBatch    int           `yaml:"settle_batch"`
	SettleInterval time.Duration `yaml:"settle_interval"`
	// SettleWriters is how many batches may be written at once (SQLite writes one at a time
	// whatever this says).
	SettleWriters int `yaml:"settle_writers"`
	// MaxBatch bounds the tasks of one batched call to an instance that takes them (the
	// instance's own max_batch bounds it too); 1 sends single calls only.
	MaxBatch int `yaml:"max_batch"`
	// MaxBatchBytes bounds the arguments' bytes of one batched call; a task larger alone goes
	// in a call of its own.
	MaxBatchBytes int64 `yaml:"max_batch_bytes"`
}

// Retention is how long ended work is kept. Zero keeps it forever.
type Retention struct {
	// Schedule is the retention job's cron spec (with seconds).
	Schedule string `yaml:"schedule"`
	// Succeeded is how long succeeded and cancelled tasks are kept after they end.
	Succeeded time.Duration `yaml:"succeeded"`
	// DeadLetters is how long exhausted tasks are kept after they end; zero keeps them until
	// an operator replays or discards them.
	DeadLetters time.Duration `yaml:"dead_letters"`
	// Attempts is how long attempt records are kept.
	Attempts time.Duration `yaml:"attempts"`
	// Batch bounds the rows deleted per statement.
	Batch int `yaml:"batch"`
}

// Log is the structured log.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Bootstrap is what a node creates in an empty database.
type Bootstrap struct {
	// Namespace and Group are created, with scene auto-creation on, when the database has no
	// namespace at all; empty skips it.
	Namespace string `yaml:"namespace"`
	Group     string `yaml:"group"`
	// GroupToken is the created group's token; empty generates one and logs it once.
	GroupToken string `yaml:"group_token"`
	// AdminPassword is the password of the user admin, created when the database has no user;
	// empty generates one and logs it once.
	AdminPassword string `yaml:"admin_password"`
}

// Auth is how console users and API tokens are authenticated.
type Auth struct {
	// JWTSecret signs the console's session tokens (HS256, at least 32 bytes). Empty generates a
	// key on first start and keeps it in the database, shared by every node; a configured key
	// cannot be rotated through the API.
	JWTSecret string `yaml:"jwt_secret"`
	// TokenTTL is how long a session token lasts.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// BcryptCost is the cost of password hashes: 10 to 31 (12 by default).
	BcryptCost int `yaml:"bcrypt_cost"`
	// AllowWeakHash accepts a bcrypt_cost down to 4, for tests only.
	AllowWeakHash bool `yaml:"allow_weak_hash"`
}

// ClientAPI bounds what clients may send.
type ClientAPI struct {
	// MaxBodyBytes bounds a request body; larger bodies are answered 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxInflightBytes bounds the bytes of request bodies read and held at once across all
	// requests; a request that finds no room within a short wait is answered 503 busy.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// MaxPayloadBytes bounds one report's arguments; larger ones are answered 413.
	MaxPayloadBytes int64 `yaml:"max_payload_bytes"`
	// MaxBatch bounds the items of one report request.
	MaxBatch int `yaml:"max_batch"`
	// SignatureWindow is how far a request's timestamp may be from the server's clock.
	SignatureWindow time.Duration `yaml:"signature_window"`
}

// Catalog is each node's cache of groups and scenes.
type Catalog struct {
	// TTL is the most time between a node reading a group or scene from the database and
	// acting on it: an edit made on any node is obeyed by every node within it. Zero reads the
	// database for every lookup.
	TTL time.Duration `yaml:"ttl"`
	// MaxEntries bounds each of the cache's maps (groups by name and by id, scenes by name and
	// by id, scene lists).
	MaxEntries int `yaml:"max_entries"`
}

// Alert is the alert evaluation and the sealing of channel secrets.
type Alert struct {
	// SecretKey seals the channels' settings (SMTP passwords, webhook secrets) in the database:
	// the base64 of 32 random bytes (openssl rand -base64 32), the same on every node. Empty
	// generates a key on first start and keeps it in the database, so the secrets are then only
	// as safe as the database.
	SecretKey string `yaml:"secret_key"`
	// Evaluate is the alert evaluation's cron spec (with seconds), run on the leader.
	Evaluate string `yaml:"evaluate"`
	// HistoryRetention is how long the history of alert messages is kept; zero keeps it.
	HistoryRetention time.Duration `yaml:"history_retention"`
}

// ConsoleAPI configures the operators' console.
type ConsoleAPI struct {
	// Enabled serves the console at /.
	Enabled bool `yaml:"enabled"`
	// BulkRate bounds the tasks per second a node's bulk jobs act on, all its jobs together.
	BulkRate int `yaml:"bulk_rate"`
}

// Metrics configures the Prometheus metrics at /metrics.
type Metrics struct {
	// Enabled serves /metrics on server.listen.
	Enabled bool `yaml:"enabled"`
	// Token, when set, is the bearer token a scrape must carry; empty leaves /metrics open.
	Token string `yaml:"token"`
}

// Default returns the configuration used when nothing is set: one node on :8080 with the
// embedded SQLite database under ./data.
func Default() Config {
	return Config{
		Server: Server{Listen: ":8080", ShutdownTimeout: 30 * time.Second, MaxConnections: 1024},
		Database: Database{DSN: "sqlite://data/retryhub.db", MaxOpenConns: 32, MaxIdleConns: 32,
			ConnMaxLife: 30 * time.Minute, SlowQuery: time.Second},
		Scheduler: Scheduler{Buckets: 128, Tick: "* * * * * *", Lookahead: time.Second, ClaimBatch: 1000,
			ClaimTimeout: 30 * time.Second, HeartbeatInterval: 2 * time.Second, NodeTTL: 10 * time.Second,
			LeaseDuration: 10 * time.Second, SweepInterval: 5 * time.Second},
		Dispatch: Dispatch{Concurrency: 256, QueueSize: 20000, MaxQueuedBytes: 16 << 20, DefaultTimeout: 30 * time.Second,
			InstanceTTL: 30 * time.Second, InstanceHeartbeat: 5 * time.Second, NoInstanceDelay: 10 * time.Second,
			BusyDelay: 2 * time.Second, PausedDelay: 30 * time.Second, SettleBatch: 500,
			SettleInterval: 20 * time.Millisecond, SettleWriters: 2, MaxBatch: 32, MaxBatchBytes: 1 << 20},
		Retention: Retention{Schedule: "0 */10 * * * *", Succeeded: 7 * 24 * time.Hour,
			Attempts: 30 * 24 * time.Hour, Batch: 1000},
		Log:        Log{Level: "info", Format: "text"},
		Bootstrap:  Bootstrap{Namespace: "default", Group: "default"},
		ClientAPI:  ClientAPI{MaxBodyBytes: 4 << 20, MaxInflightBytes: 16 << 20, MaxPayloadBytes: 256 << 10, MaxBatch: 1000, SignatureWindow: 5 * time.Minute},
		Catalog:    Catalog{TTL: time.Second, MaxEntries: 10000},
		ConsoleAPI: ConsoleAPI{Enabled: true, BulkRate: 5000},
		Auth:       Auth{TokenTTL: 12 * time.Hour, BcryptCost: 12},
		Alert:      Alert{Evaluate: "*/30 * * * * *", HistoryRetention: 30 * 24 * time.Hour},
		Metrics:    Metrics{Enabled: true},
	}
}

// EnvPrefix starts every environment variable the configuration reads.
const EnvPrefix = "RETRYHUB_"

// envOutsideConfig are RETRYHUB_ variables that are read elsewhere, not configuration keys.
var envOutsideConfig = map[string]bool{"RETRYHUB_CONFIG": true, "RETRYHUB_ADMIN_PASSWORD": true}

// Load builds the configuration: defaults, then the YAML file at path (none when empty), then
// the environment (os.Environ form). It validates the result.
func Load(path string, environ []string) (Config, error) {
	cfg := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config file %s: %w", path, nameKeys(b, err))
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

var lineRE = regexp.MustCompile(`line (\d+): `)

// nameKeys adds the dotted key to each "line N:" of a YAML decoding error, so the message names
// the key and not only the line.
func nameKeys(doc []byte, err error) error {
	var root yaml.Node
	if yaml.Unmarshal(doc, &root) != nil {
		return err
	}
	msg := lineRE.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, _ := strconv.Atoi(lineRE.FindStringSubmatch(m)[1])
		if key := keyAtLine(&root, n, ""); key != "" {
			return fmt.Sprintf("line %d (key %s): ", n, key)
		}
		return m
	})
	return errors.New(msg)
}

func keyAtLine(n *yaml.Node, line int, prefix string) string {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if k := keyAtLine(c, line, prefix); k != "" {
				return k
			}
		}
		return ""
	}
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if prefix != "" {
			key = prefix + "." + key
		}
		if k.Line == line || (v.Kind == yaml.ScalarNode && v.Line == line) {
			return key
		}
		if sub := keyAtLine(v, line, key); sub != "" {
			return sub
		}
	}
	return ""
}

// leaf is one configuration key reachable by the environment.
type leaf struct {
	key   string // dotted YAML path
	value reflect.Value
}

func leaves(v reflect.Value, prefix string, out *[]leaf) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			leaves(fv, key, out)
			continue
		}
		*out = append(*out, leaf{key: key, value: fv})
	}
}

// Keys lists every configuration key with its environment variable, for documentation.
func Keys() [][2]string {
	cfg := Default()
	var ls []leaf
	leaves(reflect.ValueOf(&cfg).Elem(), "", &ls)
	out := make([][2]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, [2]string{l.key, envName(l.key)})
	}
	return out
}

func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func applyEnv(cfg *Config, environ []string) error {
	var ls []leaf
	leaves(reflect.ValueOf(cfg).Elem(), "", &ls)
	byEnv := make(map[string]leaf, len(ls))
	for _, l := range ls {
		byEnv[envName(l.key)] = l
	}
	// A variable under a section's prefix that names no key is a typo, and an error; other
	// RETRYHUB_ variables (a service's RETRYHUB_TOKEN, say) are not the server's business.
	sections := map[string]bool{}
	for _, l := range ls {
		sec, _, _ := strings.Cut(l.key, ".")
		sections[envName(sec)+"_"] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || envOutsideConfig[name] {
			continue
		}
		l, known := byEnv[name]
		if !known {
			for sec := range sections {
				if strings.HasPrefix(name, sec) {
					unknown = append(unknown, name)
					break
				}
			}
			continue
		}
		if err := set(l.value, val); err != nil {
			return fmt.Errorf("environment %s (key %s): %w", name, l.key, err)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("environment: unknown variable %s (not a configuration key; see the README for the list)", strings.Join(unknown, ", "))
	}
	return nil
}

var durationType = reflect.TypeOf(time.Duration(0))

func set(v reflect.Value, s string) error {
	s = strings.TrimSpace(s)
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a duration such as 30s or 5m: %q", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false: %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("want a whole number: %q", s)
		}
		v.SetInt(n)
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}

// MaxPayloadColumn is the most a task's arguments column holds on MySQL (MEDIUMTEXT).
const MaxPayloadColumn = 1<<24 - 1

// Validate checks values and combinations; the error names the key at fault.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		bad("server.listen", "want host:port or :port, got %q", c.Server.Listen)
	}
	if len(c.Server.NodeID) > 64 {
		bad("server.node_id", "at most 64 bytes (the database's column), got %d", len(c.Server.NodeID))
	}
	if len(c.Server.Advertise) > 255 {
		bad("server.advertise", "at most 255 bytes (the database's column), got %d", len(c.Server.Advertise))
	}
	if c.Server.ShutdownTimeout <= 0 {
		bad("server.shutdown_timeout", "must be positive")
	}
	if c.Server.MaxConnections != 0 && c.Server.MaxConnections < 16 {
		bad("server.max_connections", "want 0 (no bound) or at least 16, got %d", c.Server.MaxConnections)
	}
	if c.Server.TLSCertFile != "" && c.Server.TLSKeyFile == "" {
		bad("server.tls_key_file", "set it with server.tls_cert_file (both or neither)")
	}
	if c.Server.TLSKeyFile != "" && c.Server.TLSCertFile == "" {
		bad("server.tls_cert_file", "set it with server.tls_key_file (both or neither)")
	}
	if u := c.Server.PublicURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("server.public_url", "want an http or https URL such as https://retryhub.example.com, got %q", u)
		}
	}
	if k := c.Alert.SecretKey; k != "" {
		if key, err := decodeKey(k); err != nil || len(key) != 32 {
			bad("alert.secret_key", "want the base64 of 32 random bytes (openssl rand -base64 32)")
		}
	}
	if err := validCron(c.Alert.Evaluate); err != nil {
		bad("alert.evaluate", "%v", err)
	}
	if c.Alert.HistoryRetention < 0 {
		bad("alert.history_retention", "must not be negative (0 keeps forever)")
	}
	dsn, err := ParseDSN(c.Database.DSN)
	if err != nil {
		bad("database.dsn", "%v", err)
	}
	if c.Database.MaxOpenConns < 1 || err == nil && dsn.Driver == MySQL && c.Database.MaxOpenConns < 2 {
		// On MySQL a starting node holds one connection for the migration lock while it
		// migrates through another.
		bad("database.max_open_conns", "must be at least 1 (2 on MySQL), got %d", c.Database.MaxOpenConns)
	}
	if c.Database.MaxIdleConns < 0 {
		bad("database.max_idle_conns", "must not be negative")
	}
	s := c.Scheduler
	if s.Buckets < 1 || s.Buckets > 4096 {
		bad("scheduler.buckets", "want 1 to 4096, got %d", s.Buckets)
	}
	if err := validCron(s.Tick); err != nil {
		bad("scheduler.tick", "%v", err)
	}
	if s.Lookahead < 0 {
		bad("scheduler.lookahead", "must not be negative")
	}
	if s.ClaimBatch < 1 {
		bad("scheduler.claim_batch", "must be at least 1")
	}
	positive := map[string]time.Duration{
		"scheduler.claim_timeout": s.ClaimTimeout, "scheduler.heartbeat_interval": s.HeartbeatInterval,
		"scheduler.node_ttl": s.NodeTTL, "scheduler.lease_duration": s.LeaseDuration,
		"scheduler.sweep_interval": s.SweepInterval, "dispatch.default_timeout": c.Dispatch.DefaultTimeout,
		"dispatch.instance_ttl": c.Dispatch.InstanceTTL, "dispatch.instance_heartbeat": c.Dispatch.InstanceHeartbeat,
		"dispatch.no_instance_delay": c.Dispatch.NoInstanceDelay, "dispatch.busy_delay": c.Dispatch.BusyDelay,
		"dispatch.paused_delay": c.Dispatch.PausedDelay, "dispatch.settle_interval": c.Dispatch.SettleInterval,
		"client_api.signature_window": c.ClientAPI.SignatureWindow,
	}
	for _, k := range sortedKeys(positive) {
		if positive[k] <= 0 {
			bad(k, "must be a positive duration")
		}
	}
	if s.NodeTTL > 0 && s.HeartbeatInterval >= s.NodeTTL {
		bad("scheduler.heartbeat_interval", "must be shorter than scheduler.node_ttl (%s)", s.NodeTTL)
	}
	if s.LeaseDuration > 0 && s.HeartbeatInterval >= s.LeaseDuration {
		bad("scheduler.heartbeat_interval", "must be shorter than scheduler.lease_duration (%s)", s.LeaseDuration)
	}
	d := c.Dispatch
	if d.Concurrency < 1 {
		bad("dispatch.concurrency", "must be at least 1")
	}
	if d.QueueSize < 1 || d.QueueSize > 1_000_000 {
		bad("dispatch.queue_size", "want 1 to 1000000, got %d", d.QueueSize)
	}
	if d.MaxQueuedBytes < 0 {
		bad("dispatch.max_queued_bytes", "want 0 (no bound) or more, got %d", d.MaxQueuedBytes)
	}
	if d.SettleBatch < 1 || d.SettleBatch > 5000 {
		bad("dispatch.settle_batch", "want 1 to 5000, got %d", d.SettleBatch)
	}
	if d.SettleWriters < 1 || d.SettleWriters > 16 {
		bad("dispatch.settle_writers", "want 1 to 16, got %d", d.SettleWriters)
	}
	if d.MaxBatch < 1 || d.MaxBatch > 1000 {
		bad("dispatch.max_batch", "want 1 (single calls only) to 1000, got %d", d.MaxBatch)
	}
	if d.MaxBatchBytes < 1 || d.MaxBatchBytes > 8<<20 {
		// The SDK reads an executor body of up to 16 MiB (more when the payload limit is
		// larger): a batch must fit with room for its JSON around the arguments.
		bad("dispatch.max_batch_bytes", "want 1 to 8388608 (8 MiB), got %d", d.MaxBatchBytes)
	}
	if d.InstanceHeartbeat > 0 && d.InstanceHeartbeat >= d.InstanceTTL {
		bad("dispatch.instance_heartbeat", "must be shorter than dispatch.instance_ttl (%s)", d.InstanceTTL)
	}
	if c.ConsoleAPI.BulkRate < 1 {
		bad("console.bulk_rate", "must be at least 1 (tasks per second), got %d", c.ConsoleAPI.BulkRate)
	}
	r := c.Retention
	if err := validCron(r.Schedule); err != nil {
		bad("retention.schedule", "%v", err)
	}
	kept := map[string]time.Duration{"retention.succeeded": r.Succeeded,
		"retention.dead_letters": r.DeadLetters, "retention.attempts": r.Attempts}
	for _, k := range sortedKeys(kept) {
		if kept[k] < 0 {
			bad(k, "must not be negative (0 keeps forever)")
		}
	}
	if r.Batch < 1 {
		bad("retention.batch", "must be at least 1")
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "want text or json, got %q", c.Log.Format)
	}
	if (c.Bootstrap.Namespace == "") != (c.Bootstrap.Group == "") {
		bad("bootstrap.group", "set both bootstrap.namespace and bootstrap.group, or neither")
	}
	a := c.ClientAPI
	if a.MaxBodyBytes < 1024 {
		bad("client_api.max_body_bytes", "must be at least 1024")
	}
	if a.MaxInflightBytes < a.MaxBodyBytes {
		bad("client_api.max_inflight_bytes", "must be at least client_api.max_body_bytes (%d), got %d", a.MaxBodyBytes, a.MaxInflightBytes)
	}
	if a.MaxPayloadBytes < 1 || a.MaxPayloadBytes > a.MaxBodyBytes {
		bad("client_api.max_payload_bytes", "want 1 to client_api.max_body_bytes (%d)", a.MaxBodyBytes)
	}
	if a.MaxPayloadBytes > MaxPayloadColumn {
		bad("client_api.max_payload_bytes", "at most %d (the arguments column, MEDIUMTEXT on MySQL), got %d", MaxPayloadColumn, a.MaxPayloadBytes)
	}
	if a.MaxBatch < 1 {
		bad("client_api.max_batch", "must be at least 1")
	}
	if c.Catalog.TTL < 0 || c.Catalog.TTL > time.Minute {
		bad("catalog.ttl", "want 0 to 1m (how stale a node's view of an edit may be), got %s", c.Catalog.TTL)
	}
	if c.Catalog.MaxEntries < 1 {
		bad("catalog.max_entries", "must be at least 1")
	}
	au := c.Auth
	if au.JWTSecret != "" && len(au.JWTSecret) < 32 {
		bad("auth.jwt_secret", "at least 32 bytes, got %d", len(au.JWTSecret))
	}
	if au.TokenTTL < time.Minute || au.TokenTTL > 30*24*time.Hour {
		bad("auth.token_ttl", "want 1m to 720h, got %s", au.TokenTTL)
	}
	minCost := 10
	if au.AllowWeakHash {
		minCost = 4
	}
	if au.BcryptCost < minCost || au.BcryptCost > 31 {
		bad("auth.bcrypt_cost", "want %d to 31, got %d", minCost, au.BcryptCost)
	}
	if p := c.Bootstrap.AdminPassword; p != "" && (len(p) < 8 || len(p) > 72) {
		bad("bootstrap.admin_password", "want 8 to 72 bytes, got %d", len(p))
	}
	return errors.Join(errs...)
}

// decodeKey reads base64 in the standard or URL alphabet, padded or not.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		var b []byte
		if b, err = enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, err
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
