package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/go-sql-driver/mysql"
	gormmysql "gorm.io/driver/mysql"
	"gorm.io/gorm"

	"github.com/retryhub/retryhub/server/internal/config"
)

// dialect is what differs between the databases the store speaks to: the syntax of the
// statements that are not plain SQL, how rows are locked, and what an error means. The store
// holds one, picked when it opens; no statement asks which database it runs on (only the column
// type of Time, in models.go, follows gorm's own dialect, which gorm hands it).
//
// Statements are written with two placeholders the dialect fills in: {t} before a column of the
// task table (the table's alias, its name, or nothing, as the statement needs) and {new}col for
// the value an INSERT brought in an upsert.
type dialect interface {
	// name is config.MySQL or config.SQLite.
	name() string
	// byteLength is the SQL expression of a text column's length in bytes.
	byteLength(col string) string
	// open connects to the database.
	open(ctx context.Context, dsn config.DSN, cfg *gorm.Config) (*gorm.DB, error)
	// tableOptions are the options of the tables migration creates.
	tableOptions() string
	// setPool sizes the connection pool for the database.
	setPool(db *sql.DB)
	// writers is how many of want write transactions can run at once.
	writers(want int) int
	// upsert returns the clause that ends an INSERT so that a row whose unique key (the
	// columns of key) exists already is updated by set instead.
	upsert(key []string, set []assign) string
	// updateIDs returns an UPDATE of the task rows whose ids the query ids selects and that
	// match where, setting set, with idArgs and setArgs in the order the statement wants them.
	updateIDs(ids string, idArgs []any, set []assign, setArgs []any, where string) (string, []any)
	// updateJoin returns an UPDATE of the task rows that join the derived table src (named v)
	// on on and match where, setting set from v's columns, with srcArgs and setArgs in the
	// order the statement wants them.
	updateJoin(src string, srcArgs []any, on string, set []assign, setArgs []any, where string) (string, []any)
	// unionPart makes a SELECT with its own ORDER BY and LIMIT a part of a UNION ALL.
	unionPart(sel string) string
	// lockRows is the clause that makes a SELECT (or an INSERT … SELECT) lock the rows it reads
	// until the transaction ends; empty where a write transaction already keeps every row as it
	// read it (SQLite writes one transaction at a time).
	lockRows() string
	// deleteLimit returns a DELETE of up to limit rows of table that match where.
	deleteLimit(table, where string, limit int) string
	// claimInTx reports whether a claim of that many statements runs in a transaction.
	claimInTx(statements int) bool
	// hourOf is an expression of the start of the hour of the time column col, as text the
	// Time column type reads.
	hourOf(col string) string
	// jsonTextAt returns an expression for the value found in the JSON text column col at the
	// path bound to its one placeholder ($.a.b[0]), as text (a number as its digits, a string
	// unquoted); NULL where there is none or col holds no valid JSON.
	jsonTextAt(col string) string
	// snapshotTx are the options of a transaction whose reads all see the database as of one
	// moment (RecountStateTotals).
	snapshotTx() *sql.TxOptions
	// isDuplicate reports whether err is a unique-key violation.
	isDuplicate(err error) bool
	// isTransient reports whether err broke a transaction off that may simply run again: a
	// deadlock, or a lock wait that timed out.
	isTransient(err error) bool
}

// dialectOf returns the dialect of a database driver.
func dialectOf(driver string) (dialect, error) {
	switch driver {
	case config.MySQL:
		return mysqlDialect{}, nil
	case config.SQLite:
		return sqliteDialect{}, nil
	}
	return nil, fmt.Errorf("unknown database driver %q", driver)
}

// assign is one "col = expr" of a SET list; expr names the task table's columns as {t}col.
type assign struct{ col, expr string }

// setList writes a SET list, qualifying the assigned columns with lhs and the task columns
// read in expressions with rhs: MySQL's multi-table UPDATE wants "t." on both sides, SQLite's
// UPDATE … FROM wants bare assigned columns and the table's own name inside expressions.
func setList(set []assign, lhs, rhs string) string {
	var b strings.Builder
	for i, a := range set {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(lhs + a.col + " = " + qualify(a.expr, rhs))
	}
	return b.String()
}

// qualify writes the task table's columns named {t}col in s as prefix+col.
func qualify(s, prefix string) string { return strings.ReplaceAll(s, "{t}", prefix) }

var newValue = regexp.MustCompile(`\{new\}(\w+)`)

type mysqlDialect struct{}

func (mysqlDialect) name() string { return config.MySQL }

func (mysqlDialect) byteLength(col string) string { return "LENGTH(" + col + ")" }

// open sets every connection's isolation to READ COMMITTED (setIsolation).
func (mysqlDialect) open(ctx context.Context, dsn config.DSN, cfg *gorm.Config) (*gorm.DB, error) {
	mc := dsn.MySQL.Clone()
	if err := setIsolation(ctx, mc.FormatDSN(), mc.Params); err != nil {
		return nil, err
	}
	return gorm.Open(gormmysql.New(gormmysql.Config{DSNConfig: mc, DSN: mc.FormatDSN()}), cfg)
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

func (mysqlDialect) tableOptions() string {
	return "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
}

func (mysqlDialect) setPool(*sql.DB) {}

func (mysqlDialect) writers(want int) int { return want }

// upsert is ON DUPLICATE KEY UPDATE with VALUES(col), which every MySQL we promise accepts (the
// "AS new" alias of MySQL 8 is unknown to MariaDB). The key is the one the insert collides with.
func (mysqlDialect) upsert(_ []string, set []assign) string {
	return " ON DUPLICATE KEY UPDATE " + newValue.ReplaceAllString(setList(set, "", ""), "VALUES($1)")
}

func (mysqlDialect) updateIDs(ids string, idArgs []any, set []assign, setArgs []any, where string) (string, []any) {
	q := "UPDATE rh_task t JOIN (" + ids + ") x ON t.id = x.id SET " + setList(set, "t.", "t.") +
		" WHERE " + qualify(where, "t.")
	return q, append(append(make([]any, 0, len(idArgs)+len(setArgs)), idArgs...), setArgs...)
}

func (mysqlDialect) updateJoin(src string, srcArgs []any, on string, set []assign, setArgs []any, where string) (string, []any) {
	q := "UPDATE rh_task t JOIN (" + src + ") v ON " + qualify(on, "t.") + " SET " + setList(set, "t.", "t.") +
		" WHERE " + qualify(where, "t.")
	return q, append(append(make([]any, 0, len(srcArgs)+len(setArgs)), srcArgs...), setArgs...)
}

func (mysqlDialect) unionPart(sel string) string { return "(" + sel + ")" }

// lockRows: under READ COMMITTED a plain read takes no lock and sees the rows as of the
// statement's start.
func (mysqlDialect) lockRows() string { return " FOR UPDATE" }

func (mysqlDialect) deleteLimit(table, where string, limit int) string {
	return fmt.Sprintf("DELETE FROM %s WHERE %s LIMIT %d", table, where, limit)
}

// claimInTx: always; a claim that fails part way, or whose read fails, then stamps nothing.
func (mysqlDialect) claimInTx(int) bool { return true }

func (mysqlDialect) hourOf(col string) string { return "DATE_FORMAT(" + col + ", '%Y-%m-%d %H:00:00')" }

// jsonTextAt: JSON_EXTRACT fails the statement on a document that is not JSON, so the CASE
// reads only valid ones.
func (mysqlDialect) jsonTextAt(col string) string {
	return "CASE WHEN JSON_VALID(" + col + ") THEN JSON_UNQUOTE(JSON_EXTRACT(" + col + ", ?)) END"
}

// snapshotTx: under REPEATABLE READ every plain read of the transaction sees the snapshot its
// first one made (the connections' own level is READ COMMITTED, where each statement makes its
// own).
func (mysqlDialect) snapshotTx() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelRepeatableRead}
}

func (mysqlDialect) isDuplicate(err error) bool {
	return mysqlErrorIs(err, 1062) || errors.Is(err, gorm.ErrDuplicatedKey)
}

// isTransient: 1213 is a deadlock (the transaction was rolled back), 1205 a lock wait that
// timed out (the statement was; the store rolls back the rest).
func (mysqlDialect) isTransient(err error) bool { return mysqlErrorIs(err, 1213, 1205) }

func mysqlErrorIs(err error, numbers ...uint16) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	for _, n := range numbers {
		if me.Number == n {
			return true
		}
	}
	return false
}

type sqliteDialect struct{}

func (sqliteDialect) name() string { return config.SQLite }

// byteLength casts to a blob: SQLite's LENGTH of text counts characters.
func (sqliteDialect) byteLength(col string) string { return "LENGTH(CAST(" + col + " AS BLOB))" }

// open creates the file's directory if need be. WAL lets readers run beside the writer;
// IMMEDIATE transactions take the write lock at BEGIN so two writers queue on the busy timeout
// instead of failing.
func (sqliteDialect) open(_ context.Context, dsn config.DSN, cfg *gorm.Config) (*gorm.DB, error) {
	if dir := filepath.Dir(dsn.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create directory %s: %w", dir, err)
		}
	}
	return gorm.Open(sqlite.Open("file:"+dsn.Path+
		"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"), cfg)
}

func (sqliteDialect) tableOptions() string { return "" }

// setPool allows one connection. SQLite writes one transaction at a time anyway, and readers on
// other connections, always some of them busy under load, would keep the write-ahead log from
// ever being checkpointed back to its start: it grew past a gigabyte in a replay run.
func (sqliteDialect) setPool(db *sql.DB) { db.SetMaxOpenConns(1) }

// writers: SQLite writes one transaction at a time.
func (sqliteDialect) writers(int) int { return 1 }

func (sqliteDialect) upsert(key []string, set []assign) string {
	return " ON CONFLICT (" + strings.Join(key, ", ") + ") DO UPDATE SET " +
		newValue.ReplaceAllString(setList(set, "", ""), "excluded.$1")
}

func (sqliteDialect) updateIDs(ids string, idArgs []any, set []assign, setArgs []any, where string) (string, []any) {
	q := "UPDATE rh_task SET " + setList(set, "", "rh_task.") + " WHERE " + qualify(where, "") + " AND id IN (" + ids + ")"
	return q, append(append(make([]any, 0, len(setArgs)+len(idArgs)), setArgs...), idArgs...)
}

func (sqliteDialect) updateJoin(src string, srcArgs []any, on string, set []assign, setArgs []any, where string) (string, []any) {
	q := "UPDATE rh_task SET " + setList(set, "", "rh_task.") + " FROM (" + src + ") AS v WHERE " +
		qualify(on, "rh_task.") + " AND " + qualify(where, "rh_task.")
	return q, append(append(make([]any, 0, len(srcArgs)+len(setArgs)), setArgs...), srcArgs...)
}

// unionPart: SQLite takes ORDER BY and LIMIT only at the end of a compound SELECT, so each
// part is a subquery.
func (sqliteDialect) unionPart(sel string) string { return "SELECT * FROM (" + sel + ")" }

func (sqliteDialect) lockRows() string { return "" }

func (sqliteDialect) deleteLimit(table, where string, limit int) string {
	// SQLite's DELETE takes a LIMIT only when built with an option; a subquery does the same.
	return fmt.Sprintf("DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE %s LIMIT %d)", table, table, where, limit)
}

// claimInTx: only when it takes more than one statement (a node holding more than 250
// buckets). One statement and its read on the one local connection go without: a transaction
// costs SQLite's due-time lag dearly.
func (sqliteDialect) claimInTx(statements int) bool { return statements > 1 }

func (sqliteDialect) hourOf(col string) string { return "strftime('%Y-%m-%d %H:00:00', " + col + ")" }

// jsonTextAt: json_extract fails the statement on malformed JSON, so the CASE reads only valid
// documents; a number comes back as a number, made text by the CAST.
func (sqliteDialect) jsonTextAt(col string) string {
	return "CASE WHEN json_valid(" + col + ") THEN CAST(json_extract(" + col + ", ?) AS TEXT) END"
}

// snapshotTx: SQLite's write transaction (IMMEDIATE) shuts every other writer out until it ends.
func (sqliteDialect) snapshotTx() *sql.TxOptions { return nil }

func (sqliteDialect) isDuplicate(err error) bool {
	return err != nil && (errors.Is(err, gorm.ErrDuplicatedKey) || strings.Contains(err.Error(), "UNIQUE constraint failed"))
}

// isTransient: SQLite waits for its lock on the busy timeout and has no deadlocks to resolve.
func (sqliteDialect) isTransient(error) bool { return false }
