package consoleapi_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// jobIn makes a running job of namespace A (no runner works on it in the route table).
func (e *env) jobIn() int64 {
	e.t.Helper()
	j, err := e.store.CreateJob(context.Background(), storage.Job{Action: retry.Pause, NamespaceID: e.nsA.ID, CreatedBy: "someone",
		Request: storage.JobRequest{IDs: []int64{1}, NamespaceIDs: []int64{e.nsA.ID}}, Total: 1})
	if err != nil {
		e.t.Fatal(err)
	}
	return j.ID
}

// jobRoutes are the rows of the bulk jobs.
func jobRoutes() map[string]routeCase {
	p := consoleapi.Prefix
	return map[string]routeCase{
		"jobs-create": {fixed(p+"/jobs", map[string]any{"action": "pause", "filter": map[string]string{"namespace": "ns-a", "state": "waiting"}}),
			operatorOfA(http.StatusAccepted)},
		"jobs-list": {fixed(p+"/jobs?state=running,done", nil), signedIn(http.StatusOK)},
		"jobs-get": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/jobs/%d", p, e.jobIn()), nil
		}, readerOfA(http.StatusOK)},
		"jobs-cancel": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/jobs/%d/cancel", p, e.jobIn()), nil
		}, operatorOfA(http.StatusOK)},
	}
}
