// Package storagetest hands each test a fresh, migrated database: an SQLite file in the test's
// temporary directory, and a MariaDB/MySQL database with a unique name that is dropped when the
// test ends. Tests run once per database with Each.
//
// The MySQL server is RETRYHUB_TEST_MYSQL_DSN (default root@tcp(127.0.0.1:3306)/, the local
// MariaDB). When it does not answer, MySQL runs are skipped with a message, unless
// RETRYHUB_TEST_REQUIRE_MYSQL=1 (CI sets it), which fails them instead.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Target is one fresh database.
type Target struct {
	// Name is "sqlite" or "mysql".
	Name string
	// DSN is its database.dsn.
	DSN string
}

// DefaultMySQL is the server tests use when RETRYHUB_TEST_MYSQL_DSN is unset.
const DefaultMySQL = "root@tcp(127.0.0.1:3306)/"

// Buckets is the bucket count test stores are migrated with.
const Buckets = 128

// Each runs fn once per database as a subtest ("sqlite", "mysql"), each on a fresh database.
func Each(t *testing.T, fn func(t *testing.T, target Target)) {
	t.Helper()
	t.Run(config.SQLite, func(t *testing.T) { fn(t, SQLite(t)) })
	t.Run(config.MySQL, func(t *testing.T) { fn(t, MySQL(t)) })
}

// EachStore is Each with an opened and migrated store.
func EachStore(t *testing.T, fn func(t *testing.T, s *storage.Store)) {
	t.Helper()
	Each(t, func(t *testing.T, target Target) { fn(t, Open(t, target)) })
}

// SQLite returns a fresh SQLite database in the test's temporary directory.
func SQLite(t testing.TB) Target {
	return Target{Name: config.SQLite, DSN: "sqlite://" + filepath.Join(t.TempDir(), "retryhub.db")}
}

func mysqlServer() string {
	if v := os.Getenv("RETRYHUB_TEST_MYSQL_DSN"); v != "" {
		return v
	}
	return DefaultMySQL
}

// MySQL creates a database with a unique name on the test MySQL server and drops it when the
// test ends. It skips (or fails, when MySQL is required) if the server does not answer.
func MySQL(t testing.TB) Target {
	t.Helper()
	mc, err := mysql.ParseDSN(mysqlServer())
	if err != nil {
		t.Fatalf("RETRYHUB_TEST_MYSQL_DSN: %v", err)
	}
	mc.DBName = ""
	admin, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		t.Fatalf("mysql: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		err = errors.Join(err, admin.Close())
		if os.Getenv("RETRYHUB_TEST_REQUIRE_MYSQL") == "1" {
			t.Fatalf("MySQL at %s does not answer and RETRYHUB_TEST_REQUIRE_MYSQL=1: %v", mc.Addr, err)
		}
		t.Skipf("MySQL at %s does not answer (%v); set RETRYHUB_TEST_MYSQL_DSN or start MariaDB to run this test on MySQL", mc.Addr, err)
	}
	name := "rh_test_" + strings.ToLower(rand.Text()[:12])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create test database: %v", errors.Join(err, admin.Close()))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
		if err := admin.Close(); err != nil {
			t.Errorf("close the test server's connections: %v", err)
		}
	})
	mc.DBName = name
	return Target{Name: config.MySQL, DSN: "mysql://" + mc.FormatDSN()}
}

// Open opens and migrates the target's database, closing it when the test ends.
func Open(t testing.TB, target Target) *storage.Store {
	t.Helper()
	dsn, err := config.ParseDSN(target.DSN)
	if err != nil {
		t.Fatalf("dsn: %v", err)
	}
	ctx := context.Background()
	s, err := storage.Open(ctx, dsn, storage.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatalf("open %s: %v", target.Name, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close %s: %v", target.Name, err)
		}
	})
	if err := s.Migrate(ctx, Buckets); err != nil {
		t.Fatalf("migrate %s: %v", target.Name, err)
	}
	return s
}

// RandomName returns a unique name with the given prefix, for namespaces, groups and scenes.
func RandomName(prefix string) string {
	return fmt.Sprintf("%s-%s", strings.TrimSuffix(prefix, "-"), strings.ToLower(rand.Text()[:8]))
}
