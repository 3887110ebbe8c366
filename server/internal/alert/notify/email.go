package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"html/template"
	"net"
	"strings"

	"github.com/wneessen/go-mail"
)

// email sends through an SMTP relay with go-mail: one connection per message, STARTTLS or
// implicit TLS as configured, AUTH when a username is set.
type email struct {
	s    EmailSettings
	tls  *tls.Config
	opts Options
}

func newEmail(s EmailSettings, opts Options) (*email, error) {
	if strings.TrimSpace(s.Host) == "" {
		return nil, errors.New("host: missing")
	}
	if strings.ContainsAny(s.Host, " /:") && net.ParseIP(s.Host) == nil {
		return nil, fmt.Errorf("host: %q is not a host name (give the port in port)", s.Host)
	}
	switch s.TLS {
	case "":
		s.TLS = TLSStartTLS
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, fmt.Errorf("tls: %q is not one of none, starttls, tls", s.TLS)
	}
	if s.Port == 0 {
		s.Port = map[string]int{TLSNone: 25, TLSStartTLS: 587, TLSImplicit: 465}[s.TLS]
	}
	if s.Port < 1 || s.Port > 65535 {
		return nil, fmt.Errorf("port: %d is not a TCP port (1-65535)", s.Port)
	}
	if s.Password != "" && s.Username == "" {
		return nil, errors.New("username: missing (a password is set)")
	}
	if _, err := checkAddress("from", s.From); err != nil {
		return nil, err
	}
	if len(s.To) == 0 {
		return nil, errors.New("to: no recipients")
	}
	for i, to := range s.To {
		if _, err := checkAddress(fmt.Sprintf("to[%d]", i), to); err != nil {
			return nil, err
		}
	}
	roots := opts.RootCAs
	if s.CAPEM != "" {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(s.CAPEM)) {
			return nil, errors.New("ca_pem: no PEM certificate in it")
		}
	}
	return &email{
		s:    s,
		tls:  &tls.Config{ServerName: s.Host, RootCAs: roots, MinVersion: tls.VersionTLS12},
		opts: opts,
	}, nil
}

// Send mails m to every recipient. The error says which step failed: connect, TLS, AUTH or a
// refused sender, recipient or message.
func (e *email) Send(ctx context.Context, m Message) error {
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	msg.SetUserAgent("retryhub")
	if m.Severity == "critical" && (m.Kind == Firing || m.Kind == Reminder) {
		msg.SetImportance(mail.ImportanceHigh)
	}
	if err := msg.From(e.s.From); err != nil {
		return fmt.Errorf("email: from: %w", err)
	}
	if err := msg.To(e.s.To...); err != nil {
		return fmt.Errorf("email: to: %w", err)
	}
	msg.Subject(Subject(m))
	msg.SetDateWithValue(e.opts.now())
	msg.SetMessageID()
	msg.SetBodyString(mail.TypeTextPlain, PlainText(m))
	if err := msg.AddAlternativeHTMLTemplate(htmlBody, htmlData(m)); err != nil {
		return fmt.Errorf("email: render the HTML part: %w", err)
	}

	// go-mail bounds the dial and every command by the timeout; no own dialer, which would
	// turn off its implicit TLS.
	copts := []mail.Option{
		mail.WithPort(e.s.Port),
		mail.WithTimeout(e.opts.dialTimeout()),
		mail.WithTLSConfig(e.tls),
	}
	switch e.s.TLS {
	case TLSNone:
		copts = append(copts, mail.WithTLSPolicy(mail.NoTLS))
	case TLSStartTLS:
		copts = append(copts, mail.WithTLSPolicy(mail.TLSMandatory))
	case TLSImplicit:
		copts = append(copts, mail.WithSSL())
	}
	if e.s.Username != "" {
		copts = append(copts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(e.s.Username), mail.WithPassword(e.s.Password))
	}
	if e.opts.HELO != "" {
		copts = append(copts, mail.WithHELO(e.opts.HELO))
	}
	c, err := mail.NewClient(e.s.Host, copts...)
	if err != nil {
		return fmt.Errorf("email: %w", err)
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("email via %s:%d (%s): %w", e.s.Host, e.s.Port, e.s.TLS, err)
	}
	return nil
}

// htmlView is what the HTML template sees; html/template escapes every string in it and keeps
// link targets to safe schemes.
type htmlView struct {
	Subject, Headline, Colour string
	Facts                     [][2]string
	Items                     []htmlItem
	More                      int
	ConsoleURL                string
}

type htmlItem struct {
	N                int
	Title, Summary   string
	Value, Threshold string
	Errors           []htmlError
	Link             string
	ErrorsOmitted    int
}

type htmlError struct {
	Error, Tasks string
}

func htmlData(m Message) htmlView {
	v := htmlView{Subject: Subject(m), Headline: headline(m), Facts: facts(m), ConsoleURL: m.ConsoleURL}
	switch {
	case m.Kind == Resolved:
		v.Colour = "#2e7d32"
	case m.Kind == Test:
		v.Colour = "#546e7a"
	case m.Severity == "critical":
		v.Colour = "#c62828"
	case m.Severity == "warning":
		v.Colour = "#ef6c00"
	default:
		v.Colour = "#1565c0"
	}
	items := m.Items
	if len(items) > maxItemsShown {
		items = items[:maxItemsShown]
		v.More = len(m.Items) - maxItemsShown
	}
	for i, it := range items {
		hi := htmlItem{N: i + 1, Title: itemTitle(it), Summary: it.Summary,
			Value: figure(it.Value, it.Unit), Threshold: figure(it.Threshold, it.Unit), Link: it.Link}
		errs := it.Errors
		if len(errs) > maxErrorsShown {
			hi.ErrorsOmitted = len(errs) - maxErrorsShown
			errs = errs[:maxErrorsShown]
		}
		for _, e := range errs {
			he := htmlError{Error: errorText(e.Error)}
			if len(e.TaskIDs) > 0 {
				he.Tasks = taskIDs(e.TaskIDs)
			}
			hi.Errors = append(hi.Errors, he)
		}
		v.Items = append(v.Items, hi)
	}
	return v
}

var htmlBody = template.Must(template.New("alert").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Subject}}</title></head>
<body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:14px;color:#212121">
<div style="border-left:4px solid {{.Colour}};padding:4px 12px;margin-bottom:12px">
<div style="font-size:16px;font-weight:bold;color:{{.Colour}}">{{.Headline}}</div>
<div>{{.Subject}}</div>
</div>
<table style="border-collapse:collapse;margin-bottom:12px">
{{range .Facts}}<tr><td style="padding:2px 12px 2px 0;color:#616161">{{index . 0}}</td><td style="padding:2px 0">{{index . 1}}</td></tr>
{{end}}</table>
{{range .Items}}<div style="margin:0 0 14px 0">
<div style="font-weight:bold">{{.N}}. {{.Title}}</div>
{{if .Summary}}<div>{{.Summary}}</div>{{end}}
<div style="color:#616161">value {{.Value}}, threshold {{.Threshold}}</div>
{{if .Errors}}<div style="margin-top:4px">Newest errors:</div>
<ul style="margin:2px 0">
{{range .Errors}}<li><code style="background:#f5f5f5">{{.Error}}</code>{{if .Tasks}} — tasks {{.Tasks}}{{end}}</li>
{{end}}</ul>{{if .ErrorsOmitted}}<div style="color:#616161">and {{.ErrorsOmitted}} more distinct errors</div>{{end}}{{end}}
{{if .Link}}<div><a href="{{.Link}}">Open these tasks in the console</a></div>{{end}}
</div>
{{end}}{{if .More}}<p>… and {{.More}} more subjects; see the console.</p>
{{end}}{{if .ConsoleURL}}<p><a href="{{.ConsoleURL}}" style="color:{{.Colour}}">Open in the console</a></p>
{{end}}<p style="color:#9e9e9e;font-size:12px">Sent by retryhub.</p>
</body></html>
`))
