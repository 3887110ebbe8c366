package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/robfig/cron/v3"
)

// Drivers a DSN may name.
const (
	SQLite = "sqlite"
	MySQL  = "mysql"
)

// DSN is a parsed database.dsn.
type DSN struct {
	// Driver is SQLite or MySQL.
	Driver string
	// Path is the SQLite file.
	Path string
	// MySQL is the MySQL driver configuration, with the settings retryhub needs applied: UTC
	// times, parsed DATETIMEs, utf8mb4, client-side parameter interpolation.
	MySQL *mysql.Config
}

// ParseDSN reads "sqlite://path", "mysql://user:pass@tcp(host:port)/db?params" or a MySQL
// driver DSN "user:pass@tcp(host:port)/db".
func ParseDSN(s string) (DSN, error) {
	switch {
	case s == "":
		return DSN{}, errors.New("empty: want sqlite://path/to/file.db or mysql://user:pass@tcp(host:3306)/db")
	case strings.HasPrefix(s, "sqlite://"):
		path := strings.TrimPrefix(s, "sqlite://")
		if path == "" {
			return DSN{}, errors.New("sqlite:// needs a file path, as in sqlite://data/retryhub.db")
		}
		return DSN{Driver: SQLite, Path: path}, nil
	case strings.HasPrefix(s, "mysql://"):
		s = strings.TrimPrefix(s, "mysql://")
	case strings.Contains(s, "@tcp(") || strings.Contains(s, "@unix("):
	default:
		return DSN{}, fmt.Errorf("%q is neither sqlite://path nor a MySQL DSN such as mysql://user:pass@tcp(host:3306)/db", redact(s))
	}
	mc, err := mysql.ParseDSN(s)
	if err != nil {
		return DSN{}, fmt.Errorf("MySQL DSN %q: %w", redact(s), err)
	}
	if mc.DBName == "" {
		return DSN{}, fmt.Errorf("MySQL DSN %q names no database (…/dbname)", redact(s))
	}
	mc.ParseTime = true
	mc.Loc = time.UTC
	mc.InterpolateParams = true
	// Rows matched, not rows changed: an update that finds its row counts it even when the
	// values were already those (two heartbeats in one millisecond).
	mc.ClientFoundRows = true
	if mc.Params == nil {
		mc.Params = map[string]string{}
	}
	if _, ok := mc.Params["charset"]; !ok {
		mc.Params["charset"] = "utf8mb4"
	}
	mc.Params["time_zone"] = "'+00:00'"
	return DSN{Driver: MySQL, MySQL: mc}, nil
}

// redact hides a password in a DSN for messages.
func redact(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	user, _, hasPass := strings.Cut(s[:at], ":")
	if !hasPass {
		return s
	}
	return user + ":***" + s[at:]
}

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom |
	cron.Month | cron.Dow | cron.Descriptor)

func validCron(spec string) error {
	if _, err := cronParser.Parse(spec); err != nil {
		return fmt.Errorf("cron spec %q: %v", spec, err)
	}
	return nil
}

// ParseCron parses a cron spec the way the configuration does (seconds optional).
func ParseCron(spec string) (cron.Schedule, error) { return cronParser.Parse(spec) }
