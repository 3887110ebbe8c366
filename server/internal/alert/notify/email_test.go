package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// received is one mail the test SMTP server accepted.
type received struct {
	from string
	to   []string
	data []byte
	user string // the AUTH PLAIN user, "" without AUTH
	tls  bool   // the session ran over TLS (STARTTLS or implicit)
}

// smtpServer is an SMTP server in the test's process. With auth set it refuses MAIL before a
// successful AUTH PLAIN with that user and password.
type smtpServer struct {
	addr string
	port int
	mail chan received
	srv  *smtp.Server
}

type smtpConfig struct {
	tls      *tls.Config // offered with STARTTLS, or used from the first byte when implicit
	implicit bool
	user     string // "" accepts mail without AUTH
	password string
}

func startSMTP(t *testing.T, cfg smtpConfig) *smtpServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{addr: l.Addr().String(), port: l.Addr().(*net.TCPAddr).Port, mail: make(chan received, 10)}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{srv: s, cfg: cfg, conn: c}, nil
	})
	s.srv = smtp.NewServer(be)
	s.srv.Domain = "localhost"
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	if cfg.implicit {
		l = tls.NewListener(l, cfg.tls)
	} else {
		s.srv.TLSConfig = cfg.tls
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = s.srv.Close()
		_ = l.Close() // Close misses a listener that Serve has not registered yet
		<-done
	})
	return s
}

// next waits for the next mail.
func (s *smtpServer) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-s.mail:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no mail arrived")
	}
	return received{}
}

type smtpSession struct {
	srv  *smtpServer
	cfg  smtpConfig
	conn *smtp.Conn
	cur  received
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, password string) error {
		if s.cfg.user == "" || user != s.cfg.user || password != s.cfg.password {
			return errors.New("invalid username or password")
		}
		s.cur.user = user
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.cfg.user != "" && s.cur.user == "" {
		return smtp.ErrAuthRequired
	}
	s.cur.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.to = append(s.cur.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	got := s.cur
	got.data = b
	_, got.tls = s.conn.TLSConnectionState()
	s.srv.mail <- got
	return nil
}

func (s *smtpSession) Reset() {
	user := s.cur.user
	s.cur = received{user: user}
}

func (s *smtpSession) Logout() error { return nil }

// parsed is a received mail taken apart.
type parsed struct {
	subject, text, html string
	header              mail.Header
}

func parseMail(t *testing.T, data []byte) parsed {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("read message: %v", err)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("decode subject: %v", err)
	}
	p := parsed{subject: subject, header: msg.Header}
	walkParts(t, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, &p)
	return p
}

// walkParts collects the text/plain and text/html parts, descending into multiparts.
func walkParts(t *testing.T, contentType, encoding string, body io.Reader, p *parsed) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatalf("content type %q: %v", contentType, err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("next part: %v", err)
			}
			// NextPart decodes quoted-printable itself and drops the header.
			walkParts(t, part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part, p)
		}
	}
	if strings.EqualFold(encoding, "base64") {
		body = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read part: %v", err)
	}
	switch mt {
	case "text/plain":
		p.text = string(b)
	case "text/html":
		p.html = string(b)
	}
}

func newSender(t *testing.T, kind string, s any, opts Options) Sender {
	t.Helper()
	snd, err := New(kind, settings(t, s), opts)
	if err != nil {
		t.Fatalf("New(%s): %v", kind, err)
	}
	return snd
}

func TestEmailDeliversBothPartsToEveryRecipient(t *testing.T) {
	srv := startSMTP(t, smtpConfig{})
	snd := newSender(t, KindEmail, EmailSettings{
		Host: "127.0.0.1", Port: srv.port, TLS: TLSNone,
		From: "Retryhub <alerts@example.com>", To: []string{"oncall@example.com", "Pay Team <pay@example.com>"},
	}, Options{DialTimeout: 5 * time.Second})

	m := firing()
	if err := snd.Send(context.Background(), m); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := srv.next(t)
	if got.from != "alerts@example.com" {
		t.Errorf("MAIL FROM %q", got.from)
	}
	if strings.Join(got.to, ",") != "oncall@example.com,pay@example.com" {
		t.Errorf("RCPT TO %q", got.to)
	}
	p := parseMail(t, got.data)
	wantSubject := "[CRITICAL] firing: payment-callback-exhausted · ns prod · scene pay.notify (+2 more) · 37 tasks"
	if p.subject != wantSubject {
		t.Errorf("subject\n got %q\nwant %q", p.subject, wantSubject)
	}
	if !strings.Contains(p.header.Get("To"), "pay@example.com") || p.header.Get("Message-Id") == "" ||
		p.header.Get("User-Agent") != "retryhub" || p.header.Get("Importance") != "high" {
		t.Errorf("headers: %v", p.header)
	}
	for _, want := range []string{
		"Namespace: prod", "tasks_exhausted, window 5m", "30 tasks exhausted in 5m (threshold 10)",
		"value 30 tasks, threshold 10 tasks", "dial tcp 10.0.0.7:443: connection refused",
		"tasks 101, 102, 103, 104, 105 and 2 more", m.Items[0].Link, "Open in the console: " + m.ConsoleURL,
		"scene order.ship (group orders)",
	} {
		if !strings.Contains(p.text, want) {
			t.Errorf("text part lacks %q:\n%s", want, p.text)
		}
	}
	for _, want := range []string{
		`href="https://retryhub.example.com/tasks?ns=prod&amp;scene=pay.notify&amp;state=exhausted"`,
		`href="https://retryhub.example.com/alerts/history?rule=7"`,
		"&lt;script&gt;alert(1)&lt;/script&gt;", "30 tasks exhausted in 5m (threshold 10)",
		"tasks 101, 102, 103, 104, 105 and 2 more",
	} {
		if !strings.Contains(p.html, want) {
			t.Errorf("HTML part lacks %q:\n%s", want, p.html)
		}
	}
	if strings.Contains(p.html, "<script>") || strings.Contains(p.html, "ZgotmplZ") {
		t.Errorf("HTML part is not escaped cleanly:\n%s", p.html)
	}
}

func TestEmailStartTLSWithAuth(t *testing.T) {
	pki := newTestPKI(t)
	srv := startSMTP(t, smtpConfig{tls: pki.server, user: "alerts", password: "s3cret"})
	s := EmailSettings{
		Host: "127.0.0.1", Port: srv.port, TLS: TLSStartTLS, Username: "alerts", Password: "s3cret",
		From: "alerts@example.com", To: []string{"oncall@example.com"},
	}
	snd := newSender(t, KindEmail, s, Options{RootCAs: pki.pool})
	if err := snd.Send(context.Background(), firing()); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := srv.next(t)
	if !got.tls || got.user != "alerts" {
		t.Errorf("session tls=%v user=%q, want TLS and AUTH as alerts", got.tls, got.user)
	}
	if p := parseMail(t, got.data); p.text == "" || p.html == "" {
		t.Errorf("parts missing: text %d bytes, html %d bytes", len(p.text), len(p.html))
	}

	t.Run("wrong password", func(t *testing.T) {
		bad := s
		bad.Password = "nope"
		err := newSender(t, KindEmail, bad, Options{RootCAs: pki.pool}).Send(context.Background(), firing())
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "auth") {
			t.Fatalf("err = %v, want an authentication failure", err)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		err := newSender(t, KindEmail, s, Options{}).Send(context.Background(), firing())
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate failure", err)
		}
	})
	t.Run("server without STARTTLS", func(t *testing.T) {
		plain := startSMTP(t, smtpConfig{})
		s := EmailSettings{Host: "127.0.0.1", Port: plain.port, TLS: TLSStartTLS,
			From: "alerts@example.com", To: []string{"oncall@example.com"}}
		err := newSender(t, KindEmail, s, Options{RootCAs: pki.pool}).Send(context.Background(), firing())
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "starttls") {
			t.Fatalf("err = %v, want STARTTLS refused", err)
		}
	})
}

func TestEmailImplicitTLSWithCAFromSettings(t *testing.T) {
	pki := newTestPKI(t)
	srv := startSMTP(t, smtpConfig{tls: pki.server, implicit: true, user: "alerts", password: "pw"})
	snd := newSender(t, KindEmail, EmailSettings{
		Host: "127.0.0.1", Port: srv.port, TLS: TLSImplicit, Username: "alerts", Password: "pw",
		From: "alerts@example.com", To: []string{"oncall@example.com"}, CAPEM: pki.caPEM,
	}, Options{})
	m := firing()
	m.Kind = Resolved
	if err := snd.Send(context.Background(), m); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := srv.next(t)
	if !got.tls || got.user != "alerts" {
		t.Errorf("session tls=%v user=%q", got.tls, got.user)
	}
	if p := parseMail(t, got.data); !strings.HasPrefix(p.subject, "[RESOLVED] payment-callback-exhausted") {
		t.Errorf("subject %q", p.subject)
	}
}

func TestEmailServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	snd := newSender(t, KindEmail, EmailSettings{Host: "127.0.0.1", Port: port, TLS: TLSNone,
		From: "alerts@example.com", To: []string{"oncall@example.com"}}, Options{DialTimeout: 2 * time.Second})
	err = snd.Send(context.Background(), firing())
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want connection refused", err)
	}
}

func TestEmailHonoursContext(t *testing.T) {
	srv := startSMTP(t, smtpConfig{})
	snd := newSender(t, KindEmail, EmailSettings{Host: "127.0.0.1", Port: srv.port, TLS: TLSNone,
		From: "alerts@example.com", To: []string{"oncall@example.com"}}, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := snd.Send(ctx, firing()); err == nil {
		t.Fatal("send with a cancelled context succeeded")
	}
}
