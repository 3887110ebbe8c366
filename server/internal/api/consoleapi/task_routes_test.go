package consoleapi_test

// taskRoutes are the rows of tasks, their attempts and bulk jobs.
func taskRoutes() map[string]routeCase {
	return map[string]routeCase{}
}
