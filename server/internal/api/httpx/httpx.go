// Package httpx holds what the HTTP APIs share: the error body every 4xx and 5xx answer
// carries, request logging and panic recovery.
package httpx

import (
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// Error answers with status and a protocol.ErrorBody, and stops the handler chain.
func Error(c *gin.Context, status int, code, message string) {
	c.AbortWithStatusJSON(status, protocol.ErrorBody{Error: protocol.ErrorDetail{Code: code, Message: message}})
}

// Internal answers 500 (503 when the cause is the database being unreachable) without
// exposing the cause, which it logs.
func Internal(c *gin.Context, log *slog.Logger, what string, err error) {
	log.ErrorContext(c.Request.Context(), what, "err", err, "path", c.Request.URL.Path)
	Error(c, http.StatusServiceUnavailable, "unavailable", what+" failed; nothing was changed, try again")
}

// Recover answers 500 instead of dropping the connection when a handler panics.
func Recover(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(r)
				}
				log.Error("panic in handler", "panic", r, "path", c.Request.URL.Path, "stack", string(debug.Stack()))
				Error(c, http.StatusInternalServerError, "internal", "internal error")
			}
		}()
		c.Next()
	}
}

// Log logs each request: failures (5xx) at error level, refusals (4xx) at info, the rest at
// debug, so the client API's volume stays out of an info log.
func Log(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		status := c.Writer.Status()
		level := slog.LevelDebug
		switch {
		case status >= 500:
			level = slog.LevelError
		case status >= 400:
			level = slog.LevelInfo
		}
		log.Log(c.Request.Context(), level, "http", "method", c.Request.Method, "path", c.Request.URL.Path,
			"status", status, "duration", time.Since(start), "remote", c.ClientIP(), "bytes", c.Writer.Size())
	}
}
