// Command retryhub-server runs one retryhub server node: the console and the client API on one
// port, the scheduler and dispatch behind them. Configuration comes from an optional YAML file
// (-config, or RETRYHUB_CONFIG) and RETRYHUB_* environment variables; with neither, it serves
// on :8080 with an SQLite database under ./data.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/config"
)

func main() {
	path := flag.String("config", os.Getenv("RETRYHUB_CONFIG"), "YAML configuration file (optional)")
	keys := flag.Bool("keys", false, "list the configuration keys and their environment variables, then exit")
	version := flag.Bool("version", false, "print the version and exit")
	healthcheck := flag.Bool("healthcheck", false, "ask this configuration's node for /healthz on the local host, exit 0 when it answers 200 (for container health checks)")
	flag.Parse()
	if *version {
		fmt.Println(app.Version)
		return
	}
	if *keys {
		for _, k := range config.Keys() {
			fmt.Printf("%-34s %s\n", k[0], k[1])
		}
		return
	}
	cfg, err := config.Load(*path, os.Environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, "retryhub-server: configuration:", err)
		os.Exit(2)
	}
	if *healthcheck {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := checkHealth(ctx, cfg.Server); err != nil {
			fmt.Fprintln(os.Stderr, "retryhub-server: healthcheck:", err)
			cancel()
			os.Exit(1)
		}
		return
	}
	log := newLogger(cfg.Log)
	slog.SetDefault(log)
	gin.SetMode(gin.ReleaseMode)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, log); err != nil {
		log.Error("retryhub-server stopped with an error", "err", err)
		os.Exit(1)
	}
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(c.Level)))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
