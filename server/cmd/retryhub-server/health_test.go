package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/retryhub/retryhub/server/internal/config"
)

func TestHealthURL(t *testing.T) {
	for _, c := range []struct {
		s    config.Server
		want string
	}{
		{config.Server{Listen: ":8080"}, "http://127.0.0.1:8080/healthz"},
		{config.Server{Listen: "0.0.0.0:9000"}, "http://127.0.0.1:9000/healthz"},
		{config.Server{Listen: "[::]:9000"}, "http://127.0.0.1:9000/healthz"},
		{config.Server{Listen: "10.1.2.3:8443", TLSCertFile: "c.pem", TLSKeyFile: "k.pem"}, "https://10.1.2.3:8443/healthz"},
	} {
		got, err := healthURL(c.s)
		if err != nil || got != c.want {
			t.Errorf("healthURL(%q) = %q, %v; want %q", c.s.Listen, got, err, c.want)
		}
	}
	if _, err := healthURL(config.Server{Listen: "8080"}); err == nil {
		t.Error("healthURL accepted a listen address without a port")
	}
}

func TestCheckHealth(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
		_, _ = w.Write([]byte(`{"status":"x"}`))
	}))
	defer srv.Close()
	s := config.Server{Listen: strings.TrimPrefix(srv.URL, "http://")}
	if err := checkHealth(context.Background(), s); err != nil {
		t.Fatalf("healthy node: %v", err)
	}
	status.Store(http.StatusServiceUnavailable)
	if err := checkHealth(context.Background(), s); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("unhealthy node: got %v, want a 503 error", err)
	}
	srv.Close()
	if err := checkHealth(context.Background(), s); err == nil {
		t.Fatal("a node that is down passed the health check")
	}
}
