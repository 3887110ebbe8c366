package storage_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// Options.OnError is told of the database's errors, of gorm's statements and of the store's
// transactions, but not of a row not found nor of a unique key taken, which the callers answer
// as such.
func TestOnErrorCountsTheDatabasesErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		storagetest.Open(t, target).Close() // creates and migrates the database
		dsn, err := config.ParseDSN(target.DSN)
		if err != nil {
			t.Fatal(err)
		}
		var errs atomic.Int64
		ctx := context.Background()
		s, err := storage.Open(ctx, dsn, storage.Options{OnError: func(error) { errs.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		ns := retry.Namespace{Name: storagetest.RandomName("ns"), Enabled: true}
		created, err := s.CreateNamespace(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateNamespace(ctx, ns); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("second namespace of one name: %v", err)
		}
		if _, err := s.Namespace(ctx, created.ID+1000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("namespace not there: %v", err)
		}
		if n := errs.Load(); n != 0 {
			t.Fatalf("%d errors counted for a conflict and a row not found", n)
		}
		s.Close()
		if _, err := s.ListNamespaces(ctx); err == nil {
			t.Fatal("a closed store listed the namespaces")
		}
		if n := errs.Load(); n != 1 {
			t.Fatalf("%d errors counted for a query on a closed database, want 1", n)
		}
		// The statements written by hand run in transactions, which count their errors too.
		if _, err := s.Ingest(ctx, []storage.NewTask{{GroupID: 1, SceneID: 1, Key: "k", Args: []byte("{}"),
			State: retry.Waiting, NextAt: time.Now()}}); err == nil {
			t.Fatal("a closed store stored a task")
		}
		if n := errs.Load(); n != 2 {
			t.Fatalf("%d errors counted after a transaction on a closed database, want 2", n)
		}
	})
}
