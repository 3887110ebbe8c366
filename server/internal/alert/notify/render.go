package notify

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on what one message shows, whatever the channel: an incident over hundreds of scenes
// or with huge error texts still makes a readable message. The console has the rest.
const (
	maxItemsShown  = 50
	maxErrorsShown = 5
	maxErrorLen    = 300
	maxTaskIDs     = 5
)

// Subject is the one-line title of a message: severity, what happened, rule, namespace, the
// subjects and the count, e.g.
//
//	[CRITICAL] firing: payment-callback-exhausted · ns prod · scene pay.notify (+2 more) · 37 tasks
//
// Reminders say "still firing", resolved messages start with [RESOLVED] and tests with [TEST].
func Subject(m Message) string {
	var b strings.Builder
	switch m.Kind {
	case Resolved:
		b.WriteString("[RESOLVED] ")
	case Test:
		b.WriteString("[TEST] ")
	default:
		b.WriteString("[" + strings.ToUpper(orDefault(m.Severity, "alert")) + "] ")
		if m.Kind == Reminder {
			b.WriteString("still firing: ")
		} else {
			b.WriteString("firing: ")
		}
	}
	if m.Kind == Test {
		b.WriteString(orDefault(m.Rule, "test message from retryhub"))
	} else {
		b.WriteString(orDefault(m.Rule, "rule "+strconv.FormatInt(m.RuleID, 10)))
	}
	if m.Namespace != "" {
		b.WriteString(" · ns " + m.Namespace)
	}
	if len(m.Items) > 0 {
		b.WriteString(" · " + itemName(m.Items[0]))
		if n := len(m.Items) - 1; n > 0 {
			fmt.Fprintf(&b, " (+%d more)", n)
		}
		if m.Kind != Resolved {
			if c := count(m.Items); c != "" {
				b.WriteString(" · " + c)
			}
		}
	}
	return oneLine(b.String())
}

// itemName names a subject: "scene pay.notify", "group payments" or the subject itself.
func itemName(it Item) string {
	switch {
	case it.Scene != "":
		return "scene " + it.Scene
	case it.Group != "":
		return "group " + it.Group
	case it.Subject != "":
		return it.Subject
	}
	return "cluster"
}

// itemTitle is itemName with the group of a scene, for bodies.
func itemTitle(it Item) string {
	if it.Scene != "" && it.Group != "" {
		return "scene " + it.Scene + " (group " + it.Group + ")"
	}
	return itemName(it)
}

// countable units add up across subjects; others (percent, seconds) do not.
var countable = map[string]bool{"tasks": true, "attempts": true, "callbacks": true, "instances": true}

// count is the subject line's figure: the sum over the subjects when the unit adds up, the one
// subject's value otherwise, "" when neither makes sense.
func count(items []Item) string {
	unit := items[0].Unit
	for _, it := range items[1:] {
		if it.Unit != unit {
			return ""
		}
	}
	if len(items) == 1 {
		return strings.TrimSpace(formatNumber(items[0].Value) + " " + unit)
	}
	if !countable[unit] {
		return ""
	}
	var sum float64
	for _, it := range items {
		sum += it.Value
	}
	return formatNumber(sum) + " " + unit
}

// formatNumber prints a figure without noise: 37, 12.5, 99.87.
func formatNumber(v float64) string {
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

// figure is a value with its unit, "37 tasks", "12.5 percent".
func figure(v float64, unit string) string {
	return strings.TrimSpace(formatNumber(v) + " " + unit)
}

// headline says what happened in words, for the first line of a body.
func headline(m Message) string {
	switch m.Kind {
	case Resolved:
		return "Resolved"
	case Reminder:
		return "Still firing"
	case Test:
		return "Test message"
	}
	return "Firing"
}

// facts are the message's "label: value" lines shown before the subjects.
func facts(m Message) [][2]string {
	var f [][2]string
	if m.Kind != Test {
		f = append(f, [2]string{"Rule", m.Rule})
	}
	if m.Severity != "" {
		f = append(f, [2]string{"Severity", m.Severity})
	}
	if m.Namespace != "" {
		f = append(f, [2]string{"Namespace", m.Namespace})
	}
	if m.RuleKind != "" {
		what := m.RuleKind
		if m.Window > 0 {
			what += ", window " + shortDuration(m.Window)
		}
		f = append(f, [2]string{"Measures", what})
	}
	if !m.At.IsZero() {
		f = append(f, [2]string{"At", m.At.UTC().Format("2006-01-02 15:04:05 UTC")})
	}
	return f
}

// shortDuration prints 5m rather than 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// taskIDs lists the first sample ids, "101, 102, 103 and 4 more".
func taskIDs(ids []int64) string {
	n := min(len(ids), maxTaskIDs)
	parts := make([]string, n)
	for i := range n {
		parts[i] = strconv.FormatInt(ids[i], 10)
	}
	s := strings.Join(parts, ", ")
	if len(ids) > n {
		s += fmt.Sprintf(" and %d more", len(ids)-n)
	}
	return s
}

// errorText is an error on one line, cut to maxErrorLen.
func errorText(s string) string {
	return truncate(oneLine(s), maxErrorLen)
}

// oneLine folds control characters (CR, LF, tabs) into spaces.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == '\r' || r == '\n' || r == '\t' || r == '\v' || r == '\f'
	}), " ")
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := n - len(ellipsis)
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// PlainText renders a message as the plain-text body of a mail: the facts, then per subject
// its summary, figures, newest errors with sample task ids and a link to its tasks, then the
// link to the incident in the console.
func PlainText(m Message) string {
	var b strings.Builder
	b.WriteString(Subject(m) + "\n\n")
	b.WriteString(headline(m) + "\n")
	for _, f := range facts(m) {
		fmt.Fprintf(&b, "%-10s %s\n", f[0]+":", oneLine(f[1]))
	}
	items := m.Items
	if len(items) > maxItemsShown {
		items = items[:maxItemsShown]
	}
	for i, it := range items {
		fmt.Fprintf(&b, "\n%d. %s\n", i+1, oneLine(itemTitle(it)))
		if it.Summary != "" {
			b.WriteString("   " + oneLine(it.Summary) + "\n")
		}
		fmt.Fprintf(&b, "   value %s, threshold %s\n", figure(it.Value, it.Unit), figure(it.Threshold, it.Unit))
		errs := it.Errors
		if len(errs) > maxErrorsShown {
			errs = errs[:maxErrorsShown]
		}
		if len(errs) > 0 {
			b.WriteString("   Newest errors:\n")
		}
		for _, e := range errs {
			fmt.Fprintf(&b, "   - %s\n", errorText(e.Error))
			if len(e.TaskIDs) > 0 {
				fmt.Fprintf(&b, "     tasks %s\n", taskIDs(e.TaskIDs))
			}
		}
		if it.Link != "" {
			b.WriteString("   Tasks: " + it.Link + "\n")
		}
	}
	if n := len(m.Items) - len(items); n > 0 {
		fmt.Fprintf(&b, "\n… and %d more subjects; see the console.\n", n)
	}
	if m.ConsoleURL != "" {
		b.WriteString("\nOpen in the console: " + m.ConsoleURL + "\n")
	}
	return b.String()
}

// markdownStyle is the dialect of one robot's markdown.
type markdownStyle struct {
	// wecom colours the headline with WeCom's <font color> tag.
	wecom bool
	// lark leaves out the headline (the card's header shows it) and the quotes and headings
	// that lark_md does not know.
	lark bool
}

// Markdown renders a message as robot markdown (the subset DingTalk, Lark's lark_md and WeCom
// share: headings, bold, links, inline code, quotes) within limit bytes. Subjects that do not
// fit are counted in a last line that points to the console.
func Markdown(m Message, limit int) string {
	return markdown(m, limit, markdownStyle{})
}

func markdown(m Message, limit int, st markdownStyle) string {
	var head strings.Builder
	title := mdText(Subject(m))
	switch {
	case st.lark:
	case st.wecom:
		color := "warning"
		if m.Kind == Resolved {
			color = "info"
		} else if m.Kind == Test {
			color = "comment"
		}
		fmt.Fprintf(&head, "## <font color=\"%s\">%s</font>\n", color, title)
	default:
		head.WriteString("## " + title + "\n")
	}
	quote := "- " // DingTalk joins consecutive quote lines; list items stay apart
	if st.wecom {
		quote = "> " // WeCom's documented example: one quote line per fact
	} else if st.lark {
		quote = ""
	}
	for _, f := range facts(m) {
		fmt.Fprintf(&head, "%s**%s:** %s\n", quote, f[0], mdText(f[1]))
	}
	var tail string
	if m.ConsoleURL != "" {
		tail = "\n[Open in the console](" + mdURL(m.ConsoleURL) + ")\n"
	}
	out := head.String()
	budget := limit - len(tail) - 80 // room for the "more subjects" line
	shown := 0
	for i, it := range m.Items {
		block := markdownItem(i, it)
		if len(out)+len(block) > budget {
			break
		}
		out += block
		shown++
	}
	if n := len(m.Items) - shown; n > 0 {
		out += fmt.Sprintf("\n… and %d more subjects; see the console.\n", n)
	}
	out += tail
	return truncate(out, limit)
}

func markdownItem(i int, it Item) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n**%d. %s**\n", i+1, mdText(itemTitle(it)))
	if it.Summary != "" {
		b.WriteString("\n" + mdText(it.Summary) + "\n")
	}
	fmt.Fprintf(&b, "\nvalue %s, threshold %s\n", figure(it.Value, it.Unit), figure(it.Threshold, it.Unit))
	errs := it.Errors
	if len(errs) > maxErrorsShown {
		errs = errs[:maxErrorsShown]
	}
	for _, e := range errs {
		fmt.Fprintf(&b, "\n- `%s`", mdCode(e.Error))
		if len(e.TaskIDs) > 0 {
			b.WriteString(" tasks " + taskIDs(e.TaskIDs))
		}
		b.WriteString("\n")
	}
	if it.Link != "" {
		b.WriteString("\n[Tasks](" + mdURL(it.Link) + ")\n")
	}
	return b.String()
}

// mdText keeps free text from opening markdown constructs: no line breaks, no link syntax, no
// code spans and no HTML tags (WeCom and DingTalk render some). Emphasis characters stay: a
// stray * or _ inside a name does no harm, and escapes show up literally on some platforms.
func mdText(s string) string {
	return mdReplacer.Replace(oneLine(s))
}

var mdReplacer = strings.NewReplacer("](", "] (", "`", "'", "<", "‹", ">", "›")

// mdCode makes text safe inside an inline code span.
func mdCode(s string) string {
	return strings.NewReplacer("`", "'", "<", "‹", ">", "›").Replace(errorText(s))
}

// mdURL keeps a link target from closing the markdown link.
func mdURL(s string) string {
	return strings.NewReplacer("(", "%28", ")", "%29", " ", "%20").Replace(oneLine(s))
}
