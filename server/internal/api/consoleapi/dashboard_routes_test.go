package consoleapi_test

// dashboardRoutes are the rows of the dashboard, client instances and server nodes.
func dashboardRoutes() map[string]routeCase {
	return map[string]routeCase{}
}
