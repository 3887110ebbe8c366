package storage_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// schemaFile is the canonical MySQL schema, relative to this package.
const schemaFile = "../../../sql/mysql/schema.sql"

// TestMigratedSchemaMatchesSQLFile proves that what the server creates on MySQL and what
// sql/mysql/schema.sql creates are the same tables, columns, types, defaults and indexes; and
// that a server started on a database made from the file changes nothing in it.
func TestMigratedSchemaMatchesSQLFile(t *testing.T) {
	migrated := storagetest.MySQL(t)
	storagetest.Open(t, migrated)

	fromFile := storagetest.MySQL(t)
	db := rawMySQL(t, fromFile)
	src, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range statements(string(src)) {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("applying %s: %v\n%s", schemaFile, err, stmt)
		}
	}
	want := describe(t, rawMySQL(t, migrated))
	got := describe(t, db)
	compare(t, want, got)

	// A node started on the file's schema finds nothing to change, but drops the indexes an
	// earlier version made.
	if _, err := db.Exec("CREATE INDEX idx_task_cb_due ON rh_task (bucket, cb_state, claim_token, cb_next_at)"); err != nil {
		t.Fatal(err)
	}
	storagetest.Open(t, fromFile)
	compare(t, want, describe(t, db))
}

func compare(t *testing.T, migrated, file map[string]string) {
	t.Helper()
	for k, v := range migrated {
		if file[k] != v {
			t.Errorf("%s: server migration has %q, %s has %q", k, v, schemaFile, file[k])
		}
	}
	for k, v := range file {
		if _, ok := migrated[k]; !ok {
			t.Errorf("%s: %s has %q, the server migration has nothing", k, schemaFile, v)
		}
	}
}

func rawMySQL(t *testing.T, target storagetest.Target) *sql.DB {
	t.Helper()
	dsn, err := config.ParseDSN(target.DSN)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", dsn.MySQL.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

var commentRE = regexp.MustCompile(`(?m)--.*$`)

func statements(src string) []string {
	var out []string
	for _, s := range strings.Split(commentRE.ReplaceAllString(src, ""), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// describe reads a database's schema as "what: description" facts.
func describe(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	facts := map[string]string{}
	query := func(q string, fn func(cols []sql.NullString)) {
		rows, err := db.QueryContext(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		defer closeRows(t, rows)
		names, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			cols := make([]sql.NullString, len(names))
			ptrs := make([]any, len(names))
			for i := range cols {
				ptrs[i] = &cols[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fn(cols)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	str := func(n sql.NullString) string {
		if !n.Valid {
			return "NULL"
		}
		return n.String
	}
	query(`SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()`,
		func(c []sql.NullString) { facts["table "+c[0].String] = str(c[1]) + " " + str(c[2]) })
	query(`SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, COLLATION_NAME
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()`,
		func(c []sql.NullString) {
			facts["column "+c[0].String+"."+c[1].String] = fmt.Sprintf("#%s %s null=%s default=%s %s %s",
				str(c[2]), str(c[3]), str(c[4]), str(c[5]), str(c[6]), str(c[7]))
		})
	query(`SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE
		FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()`,
		func(c []sql.NullString) {
			facts[fmt.Sprintf("index %s.%s #%s", c[0].String, c[1].String, str(c[2]))] = str(c[3]) + " non_unique=" + str(c[4])
		})
	if len(facts) < 50 {
		t.Fatalf("only %d schema facts read", len(facts))
	}
	return facts
}

func closeRows(t *testing.T, rows *sql.Rows) {
	t.Helper()
	if err := rows.Close(); err != nil {
		t.Error(err)
	}
}
