package retryhub

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// Version is the SDK version a client announces when it registers.
const Version = "0.1.0"

// ExecutorPath is the path at which a client's own listener serves the executor endpoint, and
// the path to mount Handler at in an application's server.
const ExecutorPath = "/retryhub/execute"

// Config configures a Client. It is a plain struct: the zero value of every optional field
// picks the default named in its comment.
type Config struct {
	// Servers are the base URLs of the retryhub server, for example "http://retryhub:8080".
	// With several, the client fails over to the next when one is unreachable or answers 5xx.
	// Required.
	Servers []string
	// Namespace names the group's namespace; empty means "default".
	Namespace string
	// Group names the group this client speaks for. Required.
	Group string
	// Token is the group's token; it signs every request in both directions. Required.
	Token string

	// ListenAddr, when set, makes the client run its own HTTP server on this address (":7070",
	// "10.0.0.5:7070") that serves the executor endpoint at ExecutorPath. When empty, mount
	// Handler in the application's own server and set ExecutorURL.
	ListenAddr string
	// ExecutorURL is the URL the server POSTs replays and callbacks to, announced at
	// registration, for example "http://10.0.0.5:7070/retryhub/execute". Empty with a
	// ListenAddr means derived from it: the listener's port, and its host or, for an unspecified
	// host, the machine's first non-loopback IPv4 address. Empty without a ListenAddr means the
	// instance only reports and is never sent replays.
	ExecutorURL string
	// Capacity is how many replays and callbacks the instance runs at once; beyond it the
	// executor answers 429 at once. Zero means 16.
	Capacity int

	// ReportBatchSize bounds the reports in one request (the server's MaxBatch bounds it too).
	// Zero means 100.
	ReportBatchSize int
	// ReportInterval is how long a report waits for its batch to fill before it is sent. Zero
	// means 200ms.
	ReportInterval time.Duration
	// MaxQueuedReports bounds the reports held until delivered; beyond it a failed call gets an
	// error wrapping ErrQueueFull. Zero means 10000.
	MaxQueuedReports int
	// SpoolDir, when set, keeps every queued report in a journal file in this directory until
	// the server has committed it, so that a restart of the process loses nothing: the next
	// client of the same namespace and group re-sends what it finds there. A failed call then
	// returns once its report is fsynced (concurrent calls share one fsync). Each client needs a
	// directory of its own per group; a second one is refused at Start. Empty means reports are
	// held in memory only, and lost if the process ends before delivering them.
	SpoolDir string

	// PolicyRefreshInterval is how often the client asks the server for changed scene
	// policies. Zero means 5s.
	PolicyRefreshInterval time.Duration
	// HeartbeatInterval overrides the heartbeat interval the server asks for. Zero means the
	// server's (10s until the server has answered).
	HeartbeatInterval time.Duration
	// RetryMinDelay and RetryMaxDelay bound the back-off between tries when the server is
	// unreachable or answers 5xx: the wait starts at RetryMinDelay and doubles per failed try
	// up to RetryMaxDelay. Each background loop (report delivery, heartbeat, policy refresh)
	// logs once when it starts failing and once when it works again. Zero means 500ms and 30s.
	RetryMinDelay time.Duration
	RetryMaxDelay time.Duration
	// ConfigErrorDelay is the wait before trying again after the server refused the client's
	// credentials or requests (401, 403, 400), or presented a TLS certificate the client does
	// not trust: a configuration problem that only a person can fix, logged once at error level
	// with what to check. Reports are kept meanwhile. Zero means 30s.
	ConfigErrorDelay time.Duration

	// CAFile names a PEM file of the certificates (one or more) that the servers' TLS
	// certificates must chain to, for https Servers signed by a private CA: only these are then
	// trusted, not the system's roots. A file that cannot be read or holds no certificate is an
	// error from NewClient and Start. Empty means the system's roots (or HTTPClient's own TLS
	// configuration). With an HTTPClient, the client uses a copy of it whose transport (nil or an
	// *http.Transport) trusts these certificates.
	CAFile string
	// HTTPClient sends the client's requests to the server. Nil means a client of the SDK's own
	// with a 10s timeout.
	HTTPClient *http.Client
	// Logger receives the client's logs. Nil means slog.Default().
	Logger *slog.Logger
	// InstanceID identifies this process to the server. Empty means "<hostname>-<random hex>".
	InstanceID string
}

// withDefaults checks c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if len(c.Servers) == 0 {
		errs = append(errs, errors.New("Servers is empty: name at least one server URL"))
	}
	servers := make([]string, 0, len(c.Servers))
	for _, s := range c.Servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("server URL %q: want http(s)://host[:port][/prefix]", s))
			continue
		}
		servers = append(servers, strings.TrimRight(s, "/"))
	}
	c.Servers = servers
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.Group == "" {
		errs = append(errs, errors.New("Group is empty"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("Token is empty"))
	}
	if c.InstanceID != "" && !protocol.ValidInstanceID(c.InstanceID) {
		errs = append(errs, fmt.Errorf("InstanceID %q: use %s", c.InstanceID, protocol.InstanceIDRule))
	}
	if c.ExecutorURL != "" {
		if u, err := url.Parse(c.ExecutorURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("ExecutorURL %q: want an absolute http(s) URL", c.ExecutorURL))
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"Capacity", c.Capacity}, {"ReportBatchSize", c.ReportBatchSize}, {"MaxQueuedReports", c.MaxQueuedReports}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %d; want >= 0 (0 for the default)", f.name, f.v))
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"ReportInterval", c.ReportInterval}, {"PolicyRefreshInterval", c.PolicyRefreshInterval},
		{"HeartbeatInterval", c.HeartbeatInterval}, {"RetryMinDelay", c.RetryMinDelay},
		{"RetryMaxDelay", c.RetryMaxDelay}, {"ConfigErrorDelay", c.ConfigErrorDelay}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %s; want >= 0 (0 for the default)", f.name, f.v))
		}
	}
	var roots *x509.CertPool
	if c.CAFile != "" {
		var err error
		if roots, err = loadCAFile(c.CAFile); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("retryhub: invalid config: %w", err)
	}
	setDefault(&c.Capacity, 16)
	setDefault(&c.ReportBatchSize, 100)
	setDefault(&c.MaxQueuedReports, 10000)
	setDefault(&c.ReportInterval, 200*time.Millisecond)
	setDefault(&c.PolicyRefreshInterval, 5*time.Second)
	setDefault(&c.RetryMinDelay, 500*time.Millisecond)
	setDefault(&c.RetryMaxDelay, 30*time.Second)
	setDefault(&c.ConfigErrorDelay, 30*time.Second)
	c.RetryMaxDelay = max(c.RetryMaxDelay, c.RetryMinDelay)
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if roots != nil {
		hc, err := trusting(c.HTTPClient, roots)
		if err != nil {
			return c, fmt.Errorf("retryhub: invalid config: %w", err)
		}
		c.HTTPClient = hc
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.InstanceID == "" {
		c.InstanceID = generateInstanceID()
	}
	return c, nil
}

// loadCAFile reads a PEM file of CA certificates into a pool.
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CAFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CAFile %s holds no PEM certificate (want one or more \"-----BEGIN CERTIFICATE-----\" blocks)", path)
	}
	return pool, nil
}

// trusting returns a copy of hc whose transport trusts only roots.
func trusting(hc *http.Client, roots *x509.CertPool) (*http.Client, error) {
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("CAFile needs HTTPClient.Transport to be nil or an *http.Transport, not %T: set the CA in that transport instead", hc.Transport)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr.TLSClientConfig.RootCAs = roots
	cp := *hc
	cp.Transport = tr
	return &cp, nil
}

func setDefault[V comparable](v *V, def V) {
	var zero V
	if *v == zero {
		*v = def
	}
}

// generateInstanceID returns "<hostname>-<12 hex digits>", the hostname cut and cleaned so
// that the id keeps to the server's rule.
func generateInstanceID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r < 128 && (r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return -1
	}, host)
	host = strings.TrimLeft(host, "._-")
	if len(host) > 48 {
		host = host[:48]
	}
	if host == "" {
		host = "instance"
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
