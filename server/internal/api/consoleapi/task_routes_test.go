package consoleapi_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
)

// readerOfA is for what a reader of namespace A (viewer and up) does in A.
func readerOfA(status int) map[string]int {
	m := adminOfA(status)
	m[viewerA] = status
	m[operatorA] = status
	return m
}

// taskRoutes are the rows of tasks, their attempts and bulk jobs.
func taskRoutes() map[string]routeCase {
	p := consoleapi.Prefix
	waiting := func(e *env) int64 { return e.taskIn(retry.Waiting) }
	return map[string]routeCase{
		"tasks-list":  {fixed(p+"/tasks?namespace=ns-a", nil), readerOfA(http.StatusOK)},
		"tasks-count": {fixed(p+"/tasks/count?namespace=ns-a&state=waiting", nil), readerOfA(http.StatusOK)},
		"tasks-get": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/tasks/%d", p, waiting(e)), nil
		}, readerOfA(http.StatusOK)},
		"tasks-act": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/tasks/%d/pause", p, waiting(e)), nil
		}, operatorOfA(http.StatusOK)},
		"tasks-set-next": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/tasks/%d/next-at", p, waiting(e)), map[string]any{"at": time.Now().Add(time.Hour)}
		}, operatorOfA(http.StatusOK)},
		"tasks-set-args": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/tasks/%d/args", p, waiting(e)), map[string]any{"args": map[string]int{"orderId": 7}}
		}, operatorOfA(http.StatusOK)},
		"tasks-create": {func(e *env, _ string) (string, any) {
			e.tasks()
			return p + "/tasks", map[string]any{"namespace": "ns-a", "group": "orders", "scene": "notify",
				"key": unique("by-hand"), "args": map[string]int{"orderId": 1}}
		}, operatorOfA(http.StatusCreated)},
	}
}
