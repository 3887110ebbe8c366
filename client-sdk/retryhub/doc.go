// Package retryhub is the Go SDK of retryhub, the retry-governance platform. Declare a fragile
// operation once, beside its function, and call it like the function:
//
//	func sendEmail(ctx context.Context, e Email) error { … }
//
//	var SendEmail = retryhub.Retryable("send-email", sendEmail,
//		retryhub.WithMode(retryhub.LocalRemote),
//		retryhub.WithLocalAttempts(3))
//
//	func main() {
//		client, err := retryhub.Start(ctx, retryhub.Config{
//			Servers:    []string{"http://retryhub:8080"},
//			Group:      "orders",
//			Token:      os.Getenv("RETRYHUB_TOKEN"),
//			ListenAddr: ":7070",
//			SpoolDir:   "/var/lib/orders/retryhub",
//		})
//		…
//		defer client.Shutdown(shutdownCtx)
//
//		err = SendEmail(ctx, email) // errors.Is(err, retryhub.ErrReported): the server retries it
//	}
//
// A call runs the function. On failure it retries in-process under the scene's policy, and
// in Remote and LocalRemote modes hands what still fails to the server as a report (batched,
// signed, kept until the server committed it). The server replays it later on a live instance
// of the group through the instance's executor endpoint (ExecutorPath on the client's own
// listener, or Handler mounted in the application's server), and runs the scene's callback
// when the task ends. Policies edited in the server's console reach running clients within
// Config.PolicyRefreshInterval.
//
// The success path costs no allocation and a few nanoseconds over a direct call. Retry storms
// are contained: see Retryable for how nested retryables and, through Transport and Middleware,
// downstream services join the caller's retry flow instead of multiplying retries.
package retryhub
