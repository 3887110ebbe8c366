package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// Every answer under /api/ is the JSON error body, whatever the method; before, a GET or HEAD of
// an unknown /api/ path fell through to the console's file server and got a plain-text 404.
func TestUnknownAPIPathsAnswerJSON(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		for _, path := range []string{"/api/", "/api/v1/nothing", "/api/v1/client/nothing", "/api/v1/console/nothing"} {
			for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
				req, err := http.NewRequest(method, node.URL()+path, strings.NewReader("{}"))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var eb protocol.ErrorBody
				decodeErr := json.NewDecoder(resp.Body).Decode(&eb)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Errorf("%s %s: %d %q, want 404 JSON", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
					continue
				}
				if method != http.MethodHead && (decodeErr != nil || eb.Error.Code != "not_found" || eb.Error.Message == "") {
					t.Errorf("%s %s: body %+v (%v), want the not_found error body", method, path, eb, decodeErr)
				}
			}
		}
		// The console is still served outside /api/.
		resp, err := http.Get(node.URL() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("console: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
}

// A report's first replay and its deadline count from when the call failed, not from when the
// report arrived: a report spooled through an outage does not wait a further full step, and
// calls reported in one batch fall due one step after their own failures. A failure time ahead
// of the server's clock counts from the server's clock.
func TestReportFirstDueCountsFromTheFailure(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, func(sc *retry.Scene) {
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
			sc.Deadline = 2 * time.Hour
		})
		before := time.Now()
		spooled := item("notify", "spooled")
		spooled.FailedAt = before.Add(-10 * time.Minute).UnixMilli()
		recent := item("notify", "recent")
		recent.FailedAt = before.Add(-3 * time.Second).UnixMilli()
		future := item("notify", "future")
		future.FailedAt = before.Add(time.Hour).UnixMilli()
		res := w.report(spooled, recent, future, item("notify", "untimed"))
		after := time.Now()
		// The failure's age is measured on the client's clock (from the failure to the signing)
		// and placed on the server's: so counted from the failure, plus at most the time the
		// request took to arrive.
		transit := after.Sub(before).Milliseconds()
		for i, want := range []int64{spooled.FailedAt, recent.FailedAt} {
			tk := w.task(res[i].TaskID)
			if got := tk.NextAt.UnixMilli() - want - time.Hour.Milliseconds(); got < 0 || got > transit {
				t.Errorf("item %d: first replay 1h and %d ms after the failure, want 1h and at most %d ms", i, got, transit)
			}
			if tk.DeadlineAt == nil {
				t.Errorf("item %d: no deadline", i)
			} else if got := tk.DeadlineAt.UnixMilli() - want - (2 * time.Hour).Milliseconds(); got < 0 || got > transit {
				t.Errorf("item %d: deadline 2h and %d ms after the failure, want 2h and at most %d ms", i, got, transit)
			}
		}
		for _, i := range []int{2, 3} {
			tk := w.task(res[i].TaskID)
			if tk.NextAt.Before(before.Add(time.Hour).Truncate(time.Millisecond)) || tk.NextAt.After(after.Add(time.Hour)) {
				t.Errorf("item %d: first replay at %s, want an hour after the report arrived (%s)", i, tk.NextAt, before)
			}
		}
	})
}

// signedRequest builds a client API request signed as g would sign it, with an instance
// header, and lets tamper change it after signing.
func signedRequest(t *testing.T, base string, g retry.Group, method, path string, body []byte, tamper func(*http.Request)) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(protocol.HeaderNamespace, g.Namespace)
	req.Header.Set(protocol.HeaderGroup, g.Name)
	req.Header.Set(protocol.HeaderInstance, "i1")
	protocol.SignRequest(req, g.Token, body, time.Now())
	if tamper != nil {
		tamper(req)
	}
	return req
}

// do sends req with body (again and again: each call sends the same bytes and headers) and
// returns the status and error code.
func do(t *testing.T, req *http.Request, body []byte) (int, string) {
	t.Helper()
	r := req.Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb protocol.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error.Code
}

// A signed request is accepted once: sent again, to the same node or another, it is refused 409
// and changes nothing. Its signature covers the method, the path and the namespace, group and
// instance headers: the same signature on a request that differs in any of them is refused.
func TestSignedRequestsCannotBeReplayedOrRedirected(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		a := startNode(t, cfg, "node-a")
		b := startNode(t, cfg, "node-b")
		w := newWorld(t, a, 3, nil)
		ctx := context.Background()
		// Groups that answer to the same token, so that only the signature tells them apart.
		other := testkit.NewGroup(t, a.Store, storagetest.RandomName("ns"), testToken)
		payments, err := a.Store.CreateGroup(ctx, retry.Group{NamespaceID: w.group.NamespaceID, Name: "payments",
			Token: testToken, Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(protocol.ReportRequest{Items: []protocol.ReportItem{item("notify", "k1")}})
		if err != nil {
			t.Fatal(err)
		}

		report := signedRequest(t, a.URL(), w.group, http.MethodPost, protocol.PathReports, body, nil)
		if status, code := do(t, report, body); status != http.StatusOK {
			t.Fatalf("first send: %d %s", status, code)
		}
		for _, node := range []string{a.URL(), b.URL()} {
			again := report.Clone(ctx)
			again.URL.Host = strings.TrimPrefix(node, "http://")
			if status, code := do(t, again, body); status != http.StatusConflict || code != "replayed_request" {
				t.Fatalf("the same request again to %s: %d %s, want 409 replayed_request", node, status, code)
			}
		}
		if n := w.countTasks(); n != 1 {
			t.Fatalf("%d tasks, want 1", n)
		}
		if tk := w.task(1); tk.Merges != 0 {
			t.Fatalf("the replayed request was merged into the task %d times", tk.Merges)
		}

		heartbeat, _ := json.Marshal(protocol.HeartbeatRequest{InstanceID: "i1"})
		for _, c := range []struct {
			name   string
			method string
			path   string
			body   []byte
			tamper func(*http.Request)
		}{
			{"another path", http.MethodPost, protocol.PathHeartbeat, heartbeat, func(r *http.Request) {
				r.URL.Path = protocol.PathDeregister
			}},
			{"another method", http.MethodPut, protocol.PathReports, body, func(r *http.Request) { r.Method = http.MethodPost }},
			{"another namespace", http.MethodPost, protocol.PathReports, body, func(r *http.Request) {
				r.Header.Set(protocol.HeaderNamespace, other.Namespace)
			}},
			{"another group", http.MethodPost, protocol.PathReports, body, func(r *http.Request) {
				r.Header.Set(protocol.HeaderGroup, payments.Name)
			}},
			{"another instance", http.MethodPost, protocol.PathHeartbeat, heartbeat, func(r *http.Request) {
				r.Header.Set(protocol.HeaderInstance, "i2")
			}},
			{"another nonce", http.MethodPost, protocol.PathReports, body, func(r *http.Request) {
				r.Header.Set(protocol.HeaderNonce, protocol.NewNonce())
			}},
		} {
			req := signedRequest(t, b.URL(), w.group, c.method, c.path, c.body, c.tamper)
			if status, code := do(t, req, c.body); status != http.StatusUnauthorized || code != "bad_signature" {
				t.Errorf("%s: %d %s, want 401 bad_signature", c.name, status, code)
			}
		}
		if n := w.countTasks(); n != 1 {
			t.Fatalf("%d tasks after the refusals, want 1", n)
		}
	})
}

// Requests naming groups that do not exist leave nothing in the node's memory: signed or not,
// they are refused 401 and the catalog keeps only what exists. Before, each made-up name was
// cached as "not found", so random headers grew the catalog without bound.
func TestMadeUpGroupsLeaveTheCatalogAsItWas(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, nil)
		if status, body := w.call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusOK {
			t.Fatalf("scenes: %d %s", status, body)
		}
		before := node.Catalog.Len()
		for i := range 300 {
			g := w.group
			g.Namespace, g.Name = storagetest.RandomName("ns"), storagetest.RandomName("g")
			if i%2 == 0 {
				g.Namespace = w.group.Namespace
			}
			status, body, err := testkit.Call(node.URL(), g, http.MethodPost, protocol.PathReports, []byte(`{"items":[]}`))
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusUnauthorized || !strings.Contains(string(body), "unknown_group") {
				t.Fatalf("made-up group %s/%s: %d %s", g.Namespace, g.Name, status, body)
			}
			h := http.Header{}
			h.Set(protocol.HeaderNamespace, g.Namespace)
			h.Set(protocol.HeaderGroup, g.Name)
			if status, eb := rawCall(t, node.URL()+protocol.PathReports, h, []byte(`{}`)); status != http.StatusUnauthorized ||
				eb.Error.Code != "missing_signature" {
				t.Fatalf("unsigned, made-up group: %d %+v", status, eb)
			}
		}
		// (The catalog may have read the world's entries again meanwhile; it holds no more.)
		if n := node.Catalog.Len(); n > before {
			t.Fatalf("the catalog holds %d entries after 600 requests naming made-up groups, %d before", n, before)
		}
	})
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key as PEM files and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "retryhub test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// A node given a certificate and key serves HTTPS: a client that trusts the certificate gets
// its health, a plain-HTTP client gets nothing from it. A bad pair stops start-up with a
// message naming the keys.
func TestNodeServesHTTPS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg := testConfig(storagetest.SQLite(t))
	cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile = certFile, keyFile
	node := startNode(t, cfg, "n1")
	if !strings.HasPrefix(node.URL(), "https://") {
		t.Fatalf("node URL %s", node.URL())
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get(node.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h app.Health
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || h.NodeID != "n1" || resp.TLS == nil {
		t.Fatalf("healthz over TLS: %d %+v", resp.StatusCode, h)
	}
	// Signed client API calls work over it too.
	w := newWorld(t, node, 3, nil)
	req := signedRequest(t, node.URL(), w.group, http.MethodGet, protocol.PathScenes, nil, nil)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scenes over TLS: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	plain := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(plain.CloseIdleConnections)
	if resp, err := plain.Get("http://" + node.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("a plain-HTTP client got the health of a TLS node")
		}
	}
	// A client that does not trust the certificate is refused too.
	if resp, err := plain.Get(node.URL() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a client that does not trust the certificate got an answer")
	}

	otherCert, _, _ := selfSigned(t)
	bad := testConfig(storagetest.SQLite(t))
	bad.Server.TLSCertFile, bad.Server.TLSKeyFile = otherCert, keyFile
	if _, err := app.New(context.Background(), bad, testkit.Logger(t)); err == nil ||
		!strings.Contains(err.Error(), "server.tls_cert_file") || !strings.Contains(err.Error(), "server.tls_key_file") {
		t.Fatalf("a certificate with another key's file: %v, want an error naming the keys", err)
	}
	bad.Server.TLSKeyFile = ""
	if _, err := app.New(context.Background(), bad, testkit.Logger(t)); err == nil || !strings.Contains(err.Error(), "server.tls_key_file") {
		t.Fatalf("a certificate without a key: %v, want an error naming server.tls_key_file", err)
	}
}
