package consoleapi_test

// catalogRoutes are the rows of namespaces, groups, scenes.
func catalogRoutes() map[string]routeCase {
	return map[string]routeCase{}
}
