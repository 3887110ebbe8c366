// Package storage is the only package that talks SQL. It keeps retry tasks, their attempts,
// the catalog (namespaces, groups, scenes), client instances, server nodes and bucket leases
// in SQLite (the embedded default) or MySQL/MariaDB/TiDB, through gorm for the schema and plain
// CRUD, and through hand-written batched statements on the hot paths: ingesting reports,
// claiming due tasks and settling them.
//
// Its files follow a task's life: ingest.go stores reports, claim.go claims due tasks,
// settle.go writes results, sweep.go takes back stuck claims, brings held tasks back and
// deletes what retention lets go, actions.go carries out operators' actions and reads tasks
// for them; statetotals.go keeps every scene's number of tasks per state, which each of these
// stages moves in its own transactions; catalog.go keeps namespaces, groups and scenes,
// cluster.go client instances, server nodes and bucket leases. What differs between the databases is in dialect.go; the
// rules the statements apply (which states an action applies to, what ending a task clears)
// are retry's.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"

	"github.com/retryhub/retryhub/server/internal/config"
)

// Store is the database. It is safe for concurrent use.
type Store struct {
	db  *gorm.DB
	sql *sql.DB
	d   dialect
	log *slog.Logger

	scanWindow int // the task list's scan window; 0: ScanWindow (tests make it small)
	// shardTurn picks the shard of each transaction's state deltas in turn (stateShard).
	shardTurn atomic.Uint32
	// returning says an upsert can end with RETURNING (SQLite; MariaDB from 10.5, not MySQL):
	// an ingest then reads its rows' ids from its INSERT instead of a second statement.
	returning bool
	// onError is Options.OnError.
	onError func(error)
}

// Options tune the connection pool.
type Options struct {
	MaxOpenConns int
	MaxIdleConns int
	ConnMaxLife  time.Duration
	// SlowQuery logs statements slower than this; zero logs none.
	SlowQuery time.Duration
	Logger    *slog.Logger
	// OnError, when set, is told of the database's errors: of the statements made through gorm
	// and of the transactions the store runs, other than a row not found, a unique key taken
	// and the like (metrics; see dbError).
	OnError func(error)
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
	d, err := dialectOf(dsn.Driver)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	s := &Store{d: d, log: log, onError: opt.OnError}
	s.shardTurn.Store(rand.Uint32())
	db, err := d.open(ctx, dsn, gcfg)
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
	d.setPool(sqlDB)
	if opt.OnError != nil {
		if err := s.countErrors(db); err != nil {
			sqlDB.Close()
			return nil, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open %s database: %w", dsn.Driver, err)
	}
	s.db, s.sql = db, sqlDB
	if s.returning, err = s.canReturn(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open %s database: %w", dsn.Driver, err)
	}
	return s, nil
}

// canReturn reports whether the database's upserts take RETURNING: SQLite's do, and MariaDB's
// from 10.5; MySQL's do not.
func (s *Store) canReturn(ctx context.Context) (bool, error) {
	if s.d.name() != config.MySQL {
		return true, nil
	}
	var version string
	if err := s.sql.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return false, fmt.Errorf("read the server's version: %w", err)
	}
	return mariaDBReturns(version), nil
}

// mariaDBReturns reports whether a server of that VERSION() is a MariaDB of 10.5 or later.
func mariaDBReturns(version string) bool {
	if !strings.Contains(strings.ToLower(version), "mariadb") {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 10 || major == 10 && minor >= 5
}

// Close closes the connections.
func (s *Store) Close() error { return s.sql.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.sql.PingContext(ctx) }

// Dialect is "mysql" or "sqlite".
func (s *Store) Dialect() string { return s.d.name() }

// Writers is how many of want write transactions (batches of settlements, say) are worth
// running at once on the database: want on MySQL, 1 on SQLite, which writes one at a time.
func (s *Store) Writers(want int) int { return max(s.d.writers(want), 1) }

// Migrate creates or updates the schema, then checks that the database was made for the same
// number of buckets (recording it on first use).
func (s *Store) Migrate(ctx context.Context, buckets int) error {
	// Nodes starting together on one MySQL database migrate one after another: each checks
	// the schema and creates what is missing, which two at once would both try.
	if s.d.name() == config.MySQL && s.sql.Stats().MaxOpenConnections != 1 {
		// (A pool of one connection could not migrate while the lock held it.)
		unlock, err := s.migrationLock(ctx)
		if err != nil {
			return err
		}
		defer unlock()
	}
	db := s.db.WithContext(ctx)
	if opts := s.d.tableOptions(); opts != "" {
		db = db.Set("gorm:table_options", opts)
	}
	// An earlier version kept one summary row per scene and minute: its table is set aside,
	// made anew with shards, and its rows are copied back as shard -1 below.
	if db.Migrator().HasTable(&summaryRow{}) && !db.Migrator().HasColumn(&summaryRow{}, "shard") {
		if err := db.Migrator().RenameTable("rh_summary_minute", summaryUnsharded); err != nil {
			return fmt.Errorf("migrate schema: set the unsharded summary aside: %w", err)
		}
	}
	if err := db.AutoMigrate(allModels...); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	if err := s.copyUnshardedSummary(ctx, db); err != nil {
		return err
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
	if err := s.ensureLeases(ctx, buckets); err != nil {
		return err
	}
	// A database whose tasks were kept by an earlier version has tasks and no totals yet.
	corrected, err := s.recountStateTotals(ctx, true)
	if err != nil {
		return err
	}
	if corrected > 0 {
		s.log.Info("migrate: counted the tasks by scene and state, which earlier versions did not keep", "totals", corrected)
	}
	return nil
}

// migrationLock takes MySQL's named lock for the migration of this database, waiting up to two
// minutes for a node that holds it, and returns its release.
func (s *Store) migrationLock(ctx context.Context) (func(), error) {
	conn, err := s.sql.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate schema: %w", err)
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(CONCAT('retryhub.migrate.', DATABASE()), 120)").Scan(&got); err != nil {
		conn.Close()
		return nil, fmt.Errorf("migrate schema: take the migration lock: %w", err)
	}
	if got.Int64 != 1 {
		conn.Close()
		return nil, errors.New("migrate schema: another node held the migration lock for two minutes")
	}
	return func() {
		// A lock left by a failed release goes with the connection.
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(CONCAT('retryhub.migrate.', DATABASE()))"); err != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, nil
}

// summaryUnsharded is where Migrate sets aside the summary table of an earlier version, whose
// key had no shard, until its rows are copied into the new one.
const summaryUnsharded = "rh_summary_minute_unsharded"

// copyUnshardedSummary copies the minutes of an earlier version's summary table into shard -1
// of the new one, which no writer uses, and drops it. The copy is one statement, and a minute
// already copied (by a start cut off before the drop) is kept as it is, so a copy run twice
// counts nothing twice and loses nothing written meanwhile.
func (s *Store) copyUnshardedSummary(ctx context.Context, db *gorm.DB) error {
	if !db.Migrator().HasTable(summaryUnsharded) {
		return nil
	}
	cols := strings.Join(summaryCols, ", ")
	keep := s.d.upsert([]string{"minute", "scene_id", "shard"}, []assign{{"reported", "rh_summary_minute.reported"}})
	res, err := s.sql.ExecContext(ctx, "INSERT INTO rh_summary_minute (minute, scene_id, shard, "+cols+") SELECT minute, scene_id, -1, "+
		cols+" FROM "+summaryUnsharded+" WHERE 1 = 1"+keep)
	if err != nil {
		return fmt.Errorf("migrate schema: copy the unsharded summary: %w", err)
	}
	n, _ := res.RowsAffected()
	if err := db.Migrator().DropTable(summaryUnsharded); err != nil {
		return fmt.Errorf("migrate schema: drop the unsharded summary: %w", err)
	}
	s.log.Info("migrate: spread the per-minute summary over shards", "rows", n)
	return nil
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

// dbtx is a *sql.DB or a *sql.Tx.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// tx runs fn in a transaction, committing when it returns nil.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.sql.BeginTx(ctx, nil)
	if err != nil {
		s.countError(err)
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		s.countError(err)
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("roll back: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		s.countError(err)
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Transient failures (a deadlock, a lock wait that timed out) are tried again up to txTries
// times in all, after a back-off that doubles from txBackoff, each wait drawn at random between
// its half and its whole so that the transactions that collided do not meet again.
const (
	txTries   = 5
	txBackoff = 10 * time.Millisecond
)

// retryTx is tx run again while the database breaks the transaction off for a reason that
// passes (isTransient), up to txTries times and never past ctx. fn must start from nothing on
// each try: the try before was rolled back.
func (s *Store) retryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	return s.retry(ctx, func() error { return s.tx(ctx, fn) })
}

// errChangedMeanwhile breaks off a transaction that found rows changed between its read of
// them and its write; like a deadlock, it passes, and the transaction is tried again.
var errChangedMeanwhile = errors.New("tasks changed while the transaction ran")

// retry runs fn again while it fails for a reason that passes, as retryTx does.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	wait := txBackoff
	for try := 1; ; try++ {
		err := fn()
		if err == nil || !(s.d.isTransient(err) || errors.Is(err, errChangedMeanwhile)) {
			return err
		}
		if try == txTries {
			return fmt.Errorf("%d tries: %w", try, err)
		}
		s.log.DebugContext(ctx, "transaction broken off; trying again", "try", try, "err", err)
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (waiting to try again after: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait *= 2
	}
}

func notFound(err error, what string) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func onConflictNothing() clause.OnConflict { return clause.OnConflict{DoNothing: true} }

// placeholders is n bound parameters, "?,?,…".
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}

// intList writes numbers for an IN list.
func intList[T ~int | ~int8 | ~int64](xs []T) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d", x)
	}
	return b.String()
}
