package consoleapi_test

import (
	"fmt"
	"net/http"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
)

// dashboardRoutes are the rows of the dashboard, client instances and server nodes.
func dashboardRoutes() map[string]routeCase {
	p := consoleapi.Prefix
	viewersOfA := func(status int) map[string]int {
		m := adminOfA(status)
		m[viewerA], m[operatorA] = status, status
		return m
	}
	return map[string]routeCase{
		"instances-list": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/instances?namespace_id=%d", p, e.nsA.ID), nil
		}, viewersOfA(http.StatusOK)},
		"nodes-list": {fixed(p+"/nodes", nil), signedIn(http.StatusOK)},
		"dashboard": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/dashboard?namespace_id=%d", p, e.nsA.ID), nil
		}, viewersOfA(http.StatusOK)},
		"dashboard-recount": {fixed(p+"/dashboard/recount", nil), globalAdmin(http.StatusNoContent)},
	}
}
