package consoleapi_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
)

// viewerOfA is for what any role in namespace A may do there.
func viewerOfA(status int) map[string]int {
	m := operatorOfA(status)
	m[viewerA] = status
	return m
}

// groupInA stores a new group in namespace A.
func (e *env) groupInA() retry.Group {
	e.t.Helper()
	g, err := e.store.CreateGroup(context.Background(), retry.Group{NamespaceID: e.nsA.ID, Name: unique("group"),
		Token: "a-token-of-sixteen-or-more", Enabled: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// sceneInA stores a new scene in a new group of namespace A.
func (e *env) sceneInA() retry.Scene {
	e.t.Helper()
	sc, err := e.store.CreateScene(context.Background(), retry.DefaultScene(e.groupInA().ID, unique("scene")))
	if err != nil {
		e.t.Fatal(err)
	}
	return sc
}

// catalogRoutes are the rows of namespaces, groups, scenes.
func catalogRoutes() map[string]routeCase {
	p := consoleapi.Prefix
	nsA := func(suffix string, body any) func(*env, string) (string, any) {
		return func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/namespaces/%d%s", p, e.nsA.ID, suffix), body
		}
	}
	group := func(suffix string, body func() any) func(*env, string) (string, any) {
		return func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/groups/%d%s", p, e.groupInA().ID, suffix), body()
		}
	}
	scene := func(suffix string, body any) func(*env, string) (string, any) {
		return func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/scenes/%d%s", p, e.sceneInA().ID, suffix), body
		}
	}
	none := func() any { return nil }
	return map[string]routeCase{
		"namespaces-list": {fixed(p+"/namespaces?limit=10", nil), signedIn(http.StatusOK)},
		"namespaces-get":  {nsA("", nil), viewerOfA(http.StatusOK)},
		"namespaces-create": {func(*env, string) (string, any) {
			return p + "/namespaces", map[string]any{"name": unique("ns")}
		}, globalAdmin(http.StatusCreated)},
		"namespaces-update": {nsA("", map[string]any{"description": "edited"}), adminOfA(http.StatusOK)},
		"groups-list":       {nsA("/groups", nil), viewerOfA(http.StatusOK)},
		"groups-create": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/namespaces/%d/groups", p, e.nsA.ID), map[string]any{"name": unique("g")}
		}, operatorOfA(http.StatusCreated)},
		"groups-get":          {group("", none), viewerOfA(http.StatusOK)},
		"groups-snippet":      {group("/snippet", none), viewerOfA(http.StatusOK)},
		"groups-update":       {group("", func() any { return map[string]any{"auto_create_scenes": true} }), operatorOfA(http.StatusOK)},
		"groups-rotate-token": {group("/rotate-token", func() any { return map[string]any{"grace": "1h"} }), operatorOfA(http.StatusOK)},
		"scenes-list":         {group("/scenes", none), viewerOfA(http.StatusOK)},
		"scenes-create": {group("/scenes", func() any { return map[string]any{"name": unique("s"), "max_attempts": 3} }),
			operatorOfA(http.StatusCreated)},
		"scenes-get":    {scene("", nil), viewerOfA(http.StatusOK)},
		"scenes-update": {scene("", map[string]any{"max_attempts": 5}), operatorOfA(http.StatusOK)},
		"scenes-pause":  {scene("/pause", nil), operatorOfA(http.StatusOK)},
		"scenes-resume": {scene("/resume", nil), operatorOfA(http.StatusOK)},
		"scenes-preview": {fixed(p+"/scenes/preview", map[string]any{"backoff": map[string]any{"strategy": "fixed", "interval": "10s"}, "count": 3}),
			signedIn(http.StatusOK)},
	}
}
