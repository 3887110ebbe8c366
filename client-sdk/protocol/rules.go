package protocol

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// The rules both sides apply to names and keys, so that the SDK refuses early what the server
// would refuse.

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	instanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
)

// NameRule describes a valid namespace, group or scene name.
const NameRule = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

// InstanceIDRule describes a valid instance id.
const InstanceIDRule = "1 to 64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"

// MaxKeyLen is the longest idempotency key, in bytes.
const MaxKeyLen = 191

// ValidName reports whether s is a valid namespace, group or scene name (NameRule).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidInstanceID reports whether s is a valid instance id (InstanceIDRule).
func ValidInstanceID(s string) bool { return instanceRE.MatchString(s) }

// CheckKey says why key is not a valid idempotency key: 1 to MaxKeyLen bytes of UTF-8, not
// ending with a space (MySQL's collations ignore trailing spaces, so "k " and "k" would be one
// key there and two on SQLite).
func CheckKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("it is empty")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%d bytes, at most %d", len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("not valid UTF-8")
	case strings.HasSuffix(key, " "):
		return fmt.Errorf("it ends with a space, which MySQL does not tell apart from the key without it")
	}
	return nil
}
