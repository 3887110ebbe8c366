package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// The SDK talks to a node that serves HTTPS with a certificate of a private CA: given the CA
// file it registers, reports, and the node's replay through its executor succeeds. Traffic is
// encrypted without a proxy in front of the server.
func TestSDKAgainstAnHTTPSNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		certFile, keyFile, _ := selfSigned(t)
		w := newSDKWorld(t, target)
		w.scene("tls-remote", protocol.Remote, nil)
		cfg := testConfig(target)
		cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile = certFile, keyFile
		node := startNode(t, cfg, "n1")
		if !strings.HasPrefix(node.URL(), "https://") {
			t.Fatalf("a TLS node's URL is %s", node.URL())
		}

		c := w.client(node.URL(), func(c *retryhub.Config) { c.CAFile = certFile })
		fn := newFlaky(1)
		call := retryhub.RetryableOn(c, "tls-remote", fn.fn)
		start(t, c)
		if err := call(context.Background(), Order{ID: "T1", Amount: 7}); !errors.Is(err, retryhub.ErrReported) {
			t.Fatalf("first call: %v, want it reported", err)
		}
		w.waitTasks(15*time.Second, "the report sent over HTTPS to be replayed and succeed", func(ts map[string][]retry.Task) bool {
			for _, tks := range ts {
				for _, tk := range tks {
					if tk.State == retry.Succeeded {
						return true
					}
				}
			}
			return false
		})
		if fn.count("T1") != 2 {
			t.Fatalf("the function ran %d times, want 2 (the call and the replay)", fn.count("T1"))
		}

		// Without the CA the client does not trust the node: Start's registration is refused
		// (the client keeps trying in the background, as it does while a server is down), and a
		// failed call stays queued in the client.
		untrusting := w.client(node.URL(), nil)
		other := retryhub.RetryableOn(untrusting, "tls-remote", newFlaky(100).fn)
		start(t, untrusting)
		if st := untrusting.Stats(); st.Registered {
			t.Fatal("a client without the CA registered with the HTTPS node")
		}
		if err := other(context.Background(), Order{ID: "T2"}); !errors.Is(err, retryhub.ErrReported) {
			t.Fatalf("call without the CA: %v, want it queued for the server", err)
		}
		if st := untrusting.Stats(); st.Registered || st.Delivered != 0 {
			t.Fatalf("a client without the CA: %+v", st)
		}
	})
}
