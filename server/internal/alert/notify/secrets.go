package notify

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Secrets names the JSON fields of a kind's settings that are secret: never returned by the
// API, stored only sealed. Robot URLs are secret because their token is the credential. A
// secret field is a string, except the webhook's headers, an object whose values are secret
// and whose names are not.
func Secrets(kind string) []string {
	switch kind {
	case KindEmail:
		return []string{"password"}
	case KindWebhook:
		return []string{"secret", "headers"}
	case KindDingTalk, KindLark:
		return []string{"url", "secret"}
	case KindWeCom:
		return []string{"url"}
	}
	return nil
}

// setSuffix marks, in redacted settings, whether a secret field has a value.
const setSuffix = "_set"

// Redact returns settings fit to show: every secret field is blanked, "" for a string and ""
// for each value of the headers object, and a marker "<field>_set" says whether it had a
// value, e.g. {"host":"smtp.example.com","password":"","password_set":true,…}. Settings that
// are not a JSON object come back as {} (nothing of them is shown).
func Redact(kind string, settings json.RawMessage) json.RawMessage {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(settings, &fields); err != nil || fields == nil {
		return json.RawMessage(`{}`)
	}
	for _, name := range Secrets(kind) {
		raw, ok := fields[name]
		set := ok && !isEmptyJSON(raw)
		if name == "headers" {
			var h map[string]string
			_ = json.Unmarshal(raw, &h)
			blank := make(map[string]string, len(h))
			for k := range h {
				blank[k] = ""
			}
			fields[name] = mustJSON(blank)
		} else {
			fields[name] = json.RawMessage(`""`)
		}
		fields[name+setSuffix] = mustJSON(set)
	}
	return mustJSON(fields)
}

// Merge applies an edit to stored settings: a secret field left empty (or absent) in next keeps
// its value from prev, so the console can send back what Redact showed. To clear a secret, an
// edit sends "<field>_set": false with the field empty. For the webhook's headers, next names
// the headers to keep; an empty value keeps the stored value of that header. The "<field>_set"
// markers are removed, and the other fields are next's. prev may be empty (a new channel).
func Merge(kind string, prev, next json.RawMessage) (json.RawMessage, error) {
	var n map[string]json.RawMessage
	if err := json.Unmarshal(next, &n); err != nil || n == nil {
		return nil, errors.New("settings: want a JSON object")
	}
	var p map[string]json.RawMessage
	if len(bytes.TrimSpace(prev)) > 0 {
		if err := json.Unmarshal(prev, &p); err != nil {
			return nil, fmt.Errorf("stored settings: %w", err)
		}
	}
	for _, name := range Secrets(kind) {
		marker, hasMarker := n[name+setSuffix]
		delete(n, name+setSuffix)
		wipe := hasMarker && bytes.Equal(bytes.TrimSpace(marker), []byte("false"))
		if name == "headers" {
			merged, err := mergeHeaders(p[name], n[name], wipe)
			if err != nil {
				return nil, err
			}
			if merged == nil {
				delete(n, name)
			} else {
				n[name] = merged
			}
			continue
		}
		if raw, ok := n[name]; ok && !isEmptyJSON(raw) {
			continue
		}
		if old, ok := p[name]; ok && !wipe && !isEmptyJSON(old) {
			n[name] = old
		} else {
			delete(n, name)
		}
	}
	return mustJSON(n), nil
}

// mergeHeaders keeps the headers next names, with prev's value where next's is empty.
func mergeHeaders(prev, next json.RawMessage, wipe bool) (json.RawMessage, error) {
	var p, n map[string]string
	if len(next) > 0 && !isEmptyJSON(next) {
		if err := json.Unmarshal(next, &n); err != nil {
			return nil, errors.New("settings: headers: want an object of strings")
		}
	}
	if len(prev) > 0 {
		_ = json.Unmarshal(prev, &p)
	}
	if len(n) == 0 {
		return nil, nil
	}
	for k, v := range n {
		if v == "" && !wipe {
			if old, ok := p[k]; ok {
				n[k] = old
			}
		}
	}
	return mustJSON(n), nil
}

func isEmptyJSON(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "", `""`, "null", "{}":
		return true
	}
	return false
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("notify: marshal %T: %v", v, err)) // maps of JSON values always marshal
	}
	return b
}

// KeySize is the length of a Sealer's key: AES-256.
const KeySize = 32

// sealPrefix versions sealed values, so a later format or key can be told apart.
const sealPrefix = "v1:"

// Sealer encrypts channel settings for storage with AES-256-GCM under a key from the
// configuration. A sealed value is "v1:" followed by the base64 of a random 12-byte nonce and
// the ciphertext with its tag; the prefix is authenticated too. A Sealer is safe for concurrent
// use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealer: the key has %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext.
func (s *Sealer) Seal(plaintext []byte) (string, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: nonce: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, plaintext, []byte(sealPrefix))
	return sealPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts what Seal made. It fails on another key, a changed byte or an unknown version.
func (s *Sealer) Open(sealed string) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, sealPrefix)
	if !ok {
		return nil, errors.New("open sealed settings: unknown format (want the v1: prefix)")
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("open sealed settings: %w", err)
	}
	ns := s.aead.NonceSize()
	if len(raw) < ns+s.aead.Overhead() {
		return nil, errors.New("open sealed settings: too short")
	}
	plain, err := s.aead.Open(nil, raw[:ns], raw[ns:], []byte(sealPrefix))
	if err != nil {
		return nil, errors.New("open sealed settings: wrong key or altered data")
	}
	return plain, nil
}

// ParseKey decodes a sealing key from configuration: the base64 (standard or URL alphabet,
// padded or not) of 32 random bytes, e.g. the output of `openssl rand -base64 32`.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("sealing key: empty")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(s); err == nil {
			if len(key) != KeySize {
				return nil, fmt.Errorf("sealing key: %d bytes after base64 decoding, want %d", len(key), KeySize)
			}
			return key, nil
		}
	}
	return nil, errors.New("sealing key: not base64")
}
