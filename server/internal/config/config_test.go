package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.Server.Listen != ":8080" || cfg.Database.DSN != "sqlite://data/retryhub.db" || cfg.Scheduler.Buckets != 128 {
		t.Fatalf("defaults changed: %+v", cfg)
	}
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "retryhub.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileThenEnvironment(t *testing.T) {
	p := write(t, "server:\n  listen: 127.0.0.1:9000\nscheduler:\n  buckets: 64\n  lease_duration: 20s\n")
	cfg, err := Load(p, []string{"RETRYHUB_SCHEDULER_BUCKETS=32", "RETRYHUB_DISPATCH_NO_INSTANCE_DELAY=3s",
		"RETRYHUB_DATABASE_DSN=mysql://root:@tcp(127.0.0.1:3306)/rh", "PATH=/bin", "RETRYHUB_ADMIN_PASSWORD=x",
		"RETRYHUB_TOKEN=a-service-token"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:9000" || cfg.Scheduler.LeaseDuration != 20*time.Second {
		t.Errorf("file values not applied: %+v", cfg.Server)
	}
	if cfg.Scheduler.Buckets != 32 || cfg.Dispatch.NoInstanceDelay != 3*time.Second {
		t.Errorf("environment did not override: buckets %d delay %s", cfg.Scheduler.Buckets, cfg.Dispatch.NoInstanceDelay)
	}
	d, _ := ParseDSN(cfg.Database.DSN)
	if d.Driver != MySQL || d.MySQL.DBName != "rh" || !d.MySQL.ParseTime {
		t.Errorf("mysql dsn: %+v", d)
	}
}

func TestEmptyFile(t *testing.T) {
	if _, err := Load(write(t, ""), nil); err != nil {
		t.Fatalf("an empty file is the defaults: %v", err)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		want string
	}{
		{"unknown file key", "server:\n  listn: :80\n", nil, "listn"},
		{"unknown section", "schedular:\n  buckets: 3\n", nil, "schedular"},
		{"bad duration in file", "scheduler:\n  lease_duration: soon\n", nil, "lease_duration"},
		{"bad duration in env", "", []string{"RETRYHUB_SCHEDULER_NODE_TTL=10"}, "scheduler.node_ttl"},
		{"unknown env", "", []string{"RETRYHUB_SERVER_LISTN=:1"}, "RETRYHUB_SERVER_LISTN"},
		{"bad dsn", "", []string{"RETRYHUB_DATABASE_DSN=postgres://x"}, "database.dsn"},
		{"mysql dsn without db", "", []string{"RETRYHUB_DATABASE_DSN=mysql://root@tcp(h:3306)/"}, "database.dsn"},
		{"bad number", "", []string{"RETRYHUB_SCHEDULER_BUCKETS=many"}, "scheduler.buckets"},
		{"zero buckets", "", []string{"RETRYHUB_SCHEDULER_BUCKETS=0"}, "scheduler.buckets"},
		{"bad tick", "", []string{"RETRYHUB_SCHEDULER_TICK=often"}, "scheduler.tick"},
		{"heartbeat longer than ttl", "", []string{"RETRYHUB_SCHEDULER_HEARTBEAT_INTERVAL=1m"}, "scheduler.heartbeat_interval"},
		{"bad listen", "", []string{"RETRYHUB_SERVER_LISTEN=8080"}, "server.listen"},
		{"bad log level", "", []string{"RETRYHUB_LOG_LEVEL=loud"}, "log.level"},
		{"node id longer than its column", "", []string{"RETRYHUB_SERVER_NODE_ID=" + strings.Repeat("n", 65)}, "server.node_id"},
		{"arguments larger than their column", "", []string{"RETRYHUB_CLIENT_API_MAX_BODY_BYTES=67108864",
			"RETRYHUB_CLIENT_API_MAX_PAYLOAD_BYTES=33554432"}, "client_api.max_payload_bytes"},
		{"certificate without key", "", []string{"RETRYHUB_SERVER_TLS_CERT_FILE=/etc/cert.pem"}, "server.tls_key_file"},
		{"key without certificate", "", []string{"RETRYHUB_SERVER_TLS_KEY_FILE=/etc/key.pem"}, "server.tls_cert_file"},
		{"catalog ttl too long", "catalog:\n  ttl: 1h\n", nil, "catalog.ttl"},
		{"no catalog entries", "", []string{"RETRYHUB_CATALOG_MAX_ENTRIES=0"}, "catalog.max_entries"},
		{"in-flight bytes below one body", "", []string{"RETRYHUB_CLIENT_API_MAX_INFLIGHT_BYTES=1024"}, "client_api.max_inflight_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ""
			if tt.file != "" {
				p = write(t, tt.file)
			}
			_, err := Load(p, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestDSNRedactsPassword(t *testing.T) {
	_, err := ParseDSN("mysql://app:s3cret@tcp(h:3306)/")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v shows the password", err)
	}
	if d, err := ParseDSN("app:pw@tcp(db:3306)/retryhub"); err != nil || d.Driver != MySQL {
		t.Fatalf("driver DSN: %v %+v", err, d)
	}
	if d, err := ParseDSN("sqlite://data/x.db"); err != nil || d.Path != "data/x.db" {
		t.Fatalf("sqlite DSN: %v %+v", err, d)
	}
}

func TestKeysHaveEnvNames(t *testing.T) {
	keys := Keys()
	found := false
	for _, k := range keys {
		if k[0] == "database.dsn" && k[1] == "RETRYHUB_DATABASE_DSN" {
			found = true
		}
	}
	if !found || len(keys) < 30 {
		t.Fatalf("keys: %v", keys)
	}
}

func TestAuthKeys(t *testing.T) {
	cfg, err := Load("", []string{"RETRYHUB_BOOTSTRAP_ADMIN_PASSWORD=correct-horse", "RETRYHUB_AUTH_TOKEN_TTL=1h"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bootstrap.AdminPassword != "correct-horse" || cfg.Auth.TokenTTL != time.Hour || cfg.Auth.BcryptCost != 12 {
		t.Fatalf("auth config %+v %+v", cfg.Auth, cfg.Bootstrap)
	}
	for env, key := range map[string]string{
		"RETRYHUB_AUTH_BCRYPT_COST=4":          "auth.bcrypt_cost",
		"RETRYHUB_AUTH_JWT_SECRET=short":       "auth.jwt_secret",
		"RETRYHUB_BOOTSTRAP_ADMIN_PASSWORD=pw": "bootstrap.admin_password",
	} {
		if _, err := Load("", []string{env}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v, want an error naming %s", env, err, key)
		}
	}
	if _, err := Load("", []string{"RETRYHUB_AUTH_BCRYPT_COST=4", "RETRYHUB_AUTH_ALLOW_WEAK_HASH=true"}); err != nil {
		t.Errorf("a weak hash allowed for tests: %v", err)
	}
}

func TestAlertKeys(t *testing.T) {
	cfg, err := Load(write(t, "server:\n  public_url: https://retryhub.example.com\nalert:\n  evaluate: \"*/10 * * * * *\"\n"),
		[]string{"RETRYHUB_ALERT_SECRET_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.PublicURL != "https://retryhub.example.com" || cfg.Alert.Evaluate != "*/10 * * * * *" || cfg.Alert.SecretKey == "" {
		t.Fatalf("alert keys: %+v %+v", cfg.Server, cfg.Alert)
	}
	for env, key := range map[string]string{
		"RETRYHUB_ALERT_SECRET_KEY=c2hvcnQ=":          "alert.secret_key",
		"RETRYHUB_ALERT_EVALUATE=every so often":      "alert.evaluate",
		"RETRYHUB_SERVER_PUBLIC_URL=ftp://x":          "server.public_url",
		"RETRYHUB_ALERT_HISTORY_RETENTION=-1h":        "alert.history_retention",
		"RETRYHUB_ALERT_SECRET_KEY=not base64 at all": "alert.secret_key",
	} {
		if _, err := Load("", []string{env}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v, want an error naming %s", env, err, key)
		}
	}
}
