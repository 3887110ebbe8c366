package notify

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSubject(t *testing.T) {
	one := firing()
	one.Items = one.Items[:1]
	percent := firing()
	for i := range percent.Items {
		percent.Items[i].Unit = "percent"
		percent.Items[i].Value = 12.345
	}
	node := Message{Kind: Firing, Severity: "warning", Rule: "node-lost", Namespace: "prod",
		Items: []Item{{Subject: "node retryhub-2", Value: 1, Unit: "nodes"}}}
	group := Message{Kind: Reminder, Severity: "critical", Rule: "no-instance",
		Items: []Item{{Group: "payments", Value: 120, Unit: "tasks"}}}
	resolved := firing()
	resolved.Kind = Resolved
	test := Message{Kind: Test, Rule: "ops mail", Namespace: "prod"}
	injected := Message{Kind: Firing, Severity: "info", Rule: "evil\r\nBcc: x@example.com", Items: []Item{{Scene: "s", Value: 1}}}

	for _, tc := range []struct {
		name string
		m    Message
		want string
	}{
		{"firing", firing(), "[CRITICAL] firing: payment-callback-exhausted · ns prod · scene pay.notify (+2 more) · 37 tasks"},
		{"one scene", one, "[CRITICAL] firing: payment-callback-exhausted · ns prod · scene pay.notify · 30 tasks"},
		{"percent does not add up", percent, "[CRITICAL] firing: payment-callback-exhausted · ns prod · scene pay.notify (+2 more)"},
		{"node", node, "[WARNING] firing: node-lost · ns prod · node retryhub-2 · 1 nodes"},
		{"reminder for a group", group, "[CRITICAL] still firing: no-instance · group payments · 120 tasks"},
		{"resolved", resolved, "[RESOLVED] payment-callback-exhausted · ns prod · scene pay.notify (+2 more)"},
		{"test", test, "[TEST] ops mail · ns prod"},
		{"no header injection", injected, "[INFO] firing: evil Bcc: x@example.com · scene s · 1"},
	} {
		if got := Subject(tc.m); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestPlainTextCapsLongIncidents(t *testing.T) {
	m := firing()
	for range 100 {
		m.Items = append(m.Items, Item{Scene: "s", Value: 1, Unit: "tasks"})
	}
	m.Items[0].Errors[0].Error = strings.Repeat("x", 5000) + "\nsecond line"
	text := PlainText(m)
	if !strings.Contains(text, "… and 53 more subjects; see the console.") {
		t.Errorf("no cap line in:\n%s", text)
	}
	if strings.Contains(text, strings.Repeat("x", maxErrorLen)) || strings.Contains(text, "second line") {
		t.Error("a long error is not cut")
	}
}

func TestMarkdownLimit(t *testing.T) {
	m := firing()
	for range 300 {
		m.Items = append(m.Items, Item{Scene: "场景", Summary: strings.Repeat("失败", 100), Value: 1, Unit: "tasks"})
	}
	for _, limit := range []int{1000, 4000, 18000} {
		md := Markdown(m, limit)
		if len(md) > limit || !utf8.ValidString(md) {
			t.Errorf("limit %d: %d bytes, valid UTF-8 %v", limit, len(md), utf8.ValidString(md))
		}
		if !strings.Contains(md, "more subjects; see the console") || !strings.HasSuffix(md, "[Open in the console]("+m.ConsoleURL+")\n") {
			t.Errorf("limit %d: the end of the message is lost:\n%s", limit, md[max(0, len(md)-300):])
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghij", 6, "abc…"},
		{"错误错误", 7, "错…"}, // never a broken rune
	} {
		if got := truncate(tc.in, tc.n); got != tc.want || len(got) > tc.n {
			t.Errorf("truncate(%q, %d) = %q", tc.in, tc.n, got)
		}
	}
}
