// Package storage is the only package that talks SQL. It keeps retry tasks, their attempts,
// the catalog (namespaces, groups, scenes), client instances, server nodes and bucket leases
// in SQLite (the embedded default) or MySQL/MariaDB/TiDB, through gorm for the schema and plain
// CRUD, and through hand-written batched statements on the hot paths: ingesting reports,
// claiming due tasks and settling them.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/retryhub/retryhub/server/internal/config"
)

// Store is the database. It is safe for concurrent use.
type Store struct {
	db    *gorm.DB
	sql   *sql.DB
	mysql bool
	log   *slog.Logger
}

// Options tune the connection pool.
type Options struct {
	MaxOpenConns int
	MaxIdleConns int
	ConnMaxLife  time.Duration
	// SlowQuery logs statements slower than this; zero logs none.
	SlowQuery time.Duration
	Logger    *slog.Logger
}

// ErrNotFound is returned when a row asked for by key does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a write would break a uniqueness rule.
var ErrConflict = errors.New("already exists")

// Open connects to the database named by dsn. It does not change the schema; call Migrate.
func Open(ctx context.Context, dsn config.DSN, opt Options) (*Store, error) {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	gcfg := &gorm.Config{
		Logger:                                   newGormLogger(log, opt.SlowQuery),
		NowFunc:                                  func() time.Time { return time.Now().UTC().Truncate(time.Millisecond) },
		SkipDefaultTransaction:                   true,
		DisableForeignKeyConstraintWhenMigrating: true,
	}
	s := &Store{log: log}
	var (
		db  *gorm.DB
		err error
	)
	switch dsn.Driver {
	case config.SQLite:
		if dir := filepath.Dir(dsn.Path); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("open sqlite: create directory %s: %w", dir, err)
			}
		}
		// WAL lets readers run beside the writer; IMMEDIATE transactions take the write lock at
		// BEGIN so two writers queue on the busy timeout instead of failing.
		db, err = gorm.Open(sqlite.Open("file:"+dsn.Path+
			"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"), gcfg)
	case config.MySQL:
		mc := dsn.MySQL.Clone()
		if err := setIsolation(ctx, mc.FormatDSN(), mc.Params); err != nil {
			return nil, err
		}
		db, err = gorm.Open(mysql.New(mysql.Config{DSNConfig: mc, DSN: mc.FormatDSN()}), gcfg)
		s.mysql = true
	default:
		return nil, fmt.Errorf("open database: unknown driver %q", dsn.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dsn.Driver, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dsn.Driver, err)
	}
	if opt.MaxOpenConns > 0 {
		sqlDB.SetMaxOpenConns(opt.MaxOpenConns)
	}
	if opt.MaxIdleConns > 0 {
		sqlDB.SetMaxIdleConns(opt.MaxIdleConns)
	}
	if opt.ConnMaxLife > 0 {
		sqlDB.SetConnMaxLifetime(opt.ConnMaxLife)
	}
	if dsn.Driver == config.SQLite {
		// One connection. SQLite writes one transaction at a time anyway, and readers on other
		// connections, always some of them busy under load, would keep the write-ahead log from
		// ever being checkpointed back to its start: it grew past a gigabyte in a replay run.
		sqlDB.SetMaxOpenConns(1)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open %s database: %w", dsn.Driver, err)
	}
	s.db, s.sql = db, sqlDB
	return s, nil
}

// setIsolation asks for READ COMMITTED on every connection: claims and settlements then lock
// only the rows they change, not the gaps between index entries. MariaDB and MySQL name the
// session variable differently, so the server is asked which one it is.
func setIsolation(ctx context.Context, dsn string, params map[string]string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return fmt.Errorf("open mysql database: %w", err)
	}
	defer db.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var version string
	if err := db.QueryRowContext(pctx, "SELECT VERSION()").Scan(&version); err != nil {
		return fmt.Errorf("open mysql database: %w", err)
	}
	if strings.Contains(strings.ToLower(version), "mariadb") {
		params["tx_isolation"] = "'READ-COMMITTED'"
	} else {
		params["transaction_isolation"] = "'READ-COMMITTED'"
	}
	return nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.sql.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.sql.PingContext(ctx) }

// Dialect is "mysql" or "sqlite".
func (s *Store) Dialect() string {
	if s.mysql {
		return config.MySQL
	}
	return config.SQLite
}

// Migrate creates or updates the schema, then checks that the database was made for the same
// number of buckets (recording it on first use).
func (s *Store) Migrate(ctx context.Context, buckets int) error {
	db := s.db.WithContext(ctx)
	if s.mysql {
		db = db.Set("gorm:table_options", "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
	}
	if err := db.AutoMigrate(allModels...); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	for _, ix := range obsoleteIndexes() {
		if !db.Migrator().HasIndex(ix.model, ix.name) {
			continue
		}
		if err := db.Migrator().DropIndex(ix.model, ix.name); err != nil {
			return fmt.Errorf("migrate schema: drop the index %s an earlier version made: %w", ix.name, err)
		}
		s.log.Info("migrate: dropped an index an earlier version made", "index", ix.name)
	}
	if err := s.checkBuckets(ctx, buckets); err != nil {
		return err
	}
	return s.ensureLeases(ctx, buckets)
}

const metaBuckets = "buckets"

func (s *Store) checkBuckets(ctx context.Context, buckets int) error {
	db := s.db.WithContext(ctx)
	row := metaRow{Name: metaBuckets, Value: strconv.Itoa(buckets)}
	if err := db.Where("name = ?", metaBuckets).Attrs(row).FirstOrCreate(&row).Error; err != nil {
		return fmt.Errorf("read bucket count: %w", err)
	}
	if row.Value != strconv.Itoa(buckets) {
		return fmt.Errorf("this database was set up with %s buckets but scheduler.buckets is %d: tasks are assigned to buckets by that number, so it cannot change; set scheduler.buckets to %s", row.Value, buckets, row.Value)
	}
	return nil
}

func (s *Store) ensureLeases(ctx context.Context, buckets int) error {
	var n int64
	if err := s.db.WithContext(ctx).Model(&leaseRow{}).Count(&n).Error; err != nil {
		return fmt.Errorf("count bucket leases: %w", err)
	}
	if int(n) == buckets {
		return nil
	}
	rows := make([]leaseRow, buckets)
	epoch := T(time.Unix(0, 0))
	for i := range rows {
		rows[i] = leaseRow{Bucket: i, ExpiresAt: epoch}
	}
	err := s.db.WithContext(ctx).Clauses(onConflictNothing()).CreateInBatches(rows, 500).Error
	if err != nil {
		return fmt.Errorf("create bucket leases: %w", err)
	}
	return nil
}

// isDuplicate reports whether err is a unique-key violation.
func isDuplicate(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "Duplicate entry") || strings.Contains(msg, "UNIQUE constraint failed")
}

type gormLogger struct {
	log  *slog.Logger
	slow time.Duration
}

func newGormLogger(log *slog.Logger, slow time.Duration) logger.Interface {
	return gormLogger{log: log, slow: slow}
}

func (l gormLogger) LogMode(logger.LogLevel) logger.Interface { return l }
func (l gormLogger) Info(ctx context.Context, msg string, args ...any) {
	l.log.InfoContext(ctx, fmt.Sprintf(msg, args...))
}
func (l gormLogger) Warn(ctx context.Context, msg string, args ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(msg, args...))
}
func (l gormLogger) Error(ctx context.Context, msg string, args ...any) {
	l.log.ErrorContext(ctx, fmt.Sprintf(msg, args...))
}
func (l gormLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	if l.slow <= 0 {
		return
	}
	if d := time.Since(begin); d >= l.slow {
		q, rows := fc()
		if len(q) > 500 {
			q = q[:500] + "…"
		}
		l.log.WarnContext(ctx, "slow query", "duration", d, "rows", rows, "sql", q)
	}
}
