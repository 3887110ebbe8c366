package notify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// firing is the message most tests send: a critical rule firing for three scenes, with errors
// (one of them HTML and markdown that must come out inert) and console links.
func firing() Message {
	return Message{
		Kind:      Firing,
		Severity:  "critical",
		RuleID:    7,
		Rule:      "payment-callback-exhausted",
		RuleKind:  "tasks_exhausted",
		Namespace: "prod",
		At:        time.Date(2026, 12, 2, 13, 40, 0, 0, time.UTC),
		Window:    5 * time.Minute,
		Items: []Item{
			{
				Group: "payments", Scene: "pay.notify", Value: 30, Threshold: 10, Unit: "tasks",
				Summary: "30 tasks exhausted in 5m (threshold 10)",
				Errors: []ErrorSample{
					{Error: "dial tcp 10.0.0.7:443: connection refused", TaskIDs: []int64{101, 102, 103, 104, 105, 106, 107}},
					{Error: "<script>alert(1)</script> **bold** [x](http://evil)", TaskIDs: []int64{108}},
				},
				Link: "https://retryhub.example.com/tasks?ns=prod&scene=pay.notify&state=exhausted",
			},
			{Group: "payments", Scene: "pay.refund", Value: 5, Threshold: 10, Unit: "tasks", Summary: "5 tasks exhausted in 5m"},
			{Group: "orders", Scene: "order.ship", Value: 2, Threshold: 10, Unit: "tasks", Summary: "2 tasks exhausted in 5m"},
		},
		ConsoleURL: "https://retryhub.example.com/alerts/history?rule=7",
	}
}

func settings(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testPKI is a CA made for one test and a server certificate it signed for 127.0.0.1 and
// localhost.
type testPKI struct {
	pool   *x509.CertPool
	caPEM  string
	server *tls.Config
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "retryhub test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{
		pool:  pool,
		caPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		server: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}},
			MinVersion:   tls.VersionTLS12,
		},
	}
}
