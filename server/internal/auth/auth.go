package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/retryhub/retryhub/server/internal/storage"
)

// Names of the browser session's cookies and the CSRF header.
const (
	// SessionCookie holds the session token; HttpOnly, so scripts cannot read it.
	SessionCookie = "retryhub_session"
	// CSRFCookie holds the session's CSRF value, readable by the console's scripts, which
	// repeat it in CSRFHeader on every change (double submit, bound to the session token).
	CSRFCookie = "retryhub_csrf"
	// CSRFHeader must repeat the session's CSRF value on a change made with the cookie.
	CSRFHeader = "X-Retryhub-CSRF"
	// APITokenPrefix starts every API token, which tells it apart from a session token.
	APITokenPrefix = "rh_"
)

// TouchEvery is how often at most an API token's last use is written.
const TouchEvery = time.Minute

// Password length bounds; bcrypt reads at most 72 bytes.
const (
	MinPassword = 8
	MaxPassword = 72
)

// ErrBadCredentials is the one answer for an unknown user and a wrong password alike.
var ErrBadCredentials = errors.New("wrong user name or password")

// ErrDisabled is returned for a disabled user's correct credentials and sessions.
var ErrDisabled = errors.New("this account is disabled")

// ThrottledError refuses a login attempt while its user or address is blocked.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed logins; try again in %s", e.RetryAfter.Round(time.Second))
}

// Params configure a Service.
type Params struct {
	Store *storage.Store
	// Secret, when set, is the signing key; otherwise it is kept in the database.
	Secret string
	// TokenTTL is a session's lifetime.
	TokenTTL time.Duration
	// BcryptCost is the cost of new password hashes.
	BcryptCost int
	// KeyCacheTTL is how long a node uses its copy of the signing key before reading it again
	// (default 10 s).
	KeyCacheTTL time.Duration
	// MaxThrottled bounds the login limiter's keys (default 10000).
	MaxThrottled int
	Log          *slog.Logger
}

// Service authenticates users and API tokens.
type Service struct {
	store *storage.Store
	keys  *Keys
	ttl   time.Duration
	cost  int
	// dummy is a hash to compare against for unknown users, for a timing like a wrong
	// password's; made at the first unknown user, so that starting a node hashes nothing.
	dummy     []byte
	dummyOnce sync.Once
	limiter   *Limiter
	log       *slog.Logger
}

// New builds the service and creates the signing key in the database if there is none.
func New(ctx context.Context, p Params) (*Service, error) {
	if p.KeyCacheTTL <= 0 {
		p.KeyCacheTTL = 10 * time.Second
	}
	if p.MaxThrottled <= 0 {
		p.MaxThrottled = 10000
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	s := &Service{store: p.Store, keys: newKeys(p.Store, p.Secret, p.KeyCacheTTL), ttl: p.TokenTTL,
		cost: p.BcryptCost, limiter: NewLimiter(p.MaxThrottled, nil), log: p.Log}
	if p.BcryptCost < bcrypt.MinCost || p.BcryptCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("bcrypt cost %d: want %d to %d", p.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if err := s.keys.init(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Limiter is the login limiter.
func (s *Service) Limiter() *Limiter { return s.limiter }

// CheckPasswordRules returns why a new password is refused, or nil.
func CheckPasswordRules(pw string) error {
	if len(pw) < MinPassword || len(pw) > MaxPassword {
		return fmt.Errorf("want %d to %d bytes, got %d", MinPassword, MaxPassword, len(pw))
	}
	return nil
}

// HashPassword hashes a password with bcrypt at the configured cost.
func (s *Service) HashPassword(pw string) (string, error) {
	if err := CheckPasswordRules(pw); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), s.cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether pw matches the user's hash.
func CheckPassword(u storage.User, pw string) bool {
	return bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(pw)) == nil
}

// Login checks a user's credentials. Failures are counted per user name and per address;
// while either is blocked every attempt is refused with a *ThrottledError, before the
// password is looked at. An unknown user costs a hash comparison as a wrong password does.
func (s *Service) Login(ctx context.Context, username, password, remote string) (storage.User, error) {
	userKey, addrKey := "u:"+username, "a:"+remote
	if wait := s.limiter.Wait(userKey, addrKey); wait > 0 {
		return storage.User{}, &ThrottledError{RetryAfter: wait}
	}
	u, err := s.store.UserByName(ctx, username)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return storage.User{}, err
	}
	if err != nil {
		s.dummyOnce.Do(func() {
			s.dummy, _ = bcrypt.GenerateFromPassword([]byte(randomString(12)), s.cost)
		})
		bcrypt.CompareHashAndPassword(s.dummy, []byte(password))
		s.limiter.Fail(userKey, addrKey)
		return storage.User{}, ErrBadCredentials
	}
	if !CheckPassword(u, password) {
		s.limiter.Fail(userKey, addrKey)
		return storage.User{}, ErrBadCredentials
	}
	if u.Disabled {
		return storage.User{}, ErrDisabled
	}
	s.limiter.Reset(userKey)
	return u, nil
}

// Session is an issued session token.
type Session struct {
	Token     string
	ExpiresAt time.Time
	CSRF      string
}

// claims are a session token's: the user id as subject, the user's token generation and the
// session's CSRF value.
type claims struct {
	jwt.RegisteredClaims
	Gen  int64  `json:"gen"`
	CSRF string `json:"csrf"`
}

// Issue signs a session token for the user, valid until its token generation changes or the
// token expires.
func (s *Service) Issue(ctx context.Context, u storage.User) (Session, error) {
	kid, secret, err := s.keys.signing(ctx)
	if err != nil {
		return Session{}, err
	}
	now := time.Now()
	exp := now.Add(s.ttl)
	c := claims{RegisteredClaims: jwt.RegisteredClaims{Subject: strconv.FormatInt(u.ID, 10),
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp), ID: randomString(12)},
		Gen: u.TokenGen, CSRF: randomString(18)}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(secret)
	if err != nil {
		return Session{}, fmt.Errorf("sign session token: %w", err)
	}
	return Session{Token: signed, ExpiresAt: c.ExpiresAt.Time, CSRF: c.CSRF}, nil
}

// RotateKey replaces the signing key and ends every user's sessions on every node at once.
func (s *Service) RotateKey(ctx context.Context) error {
	if err := s.keys.rotate(ctx); err != nil {
		return err
	}
	return s.store.EndAllSessions(ctx)
}

// Credentials are what a request presents.
type Credentials struct {
	// Authorization is the Authorization header.
	Authorization string
	// Cookie is the session cookie's value.
	Cookie string
}

// Authenticate returns the principal the credentials prove: a bearer API token (rh_…), a
// bearer session token, or the session cookie, in that order. It returns nil, nil when there
// are no credentials, and an error wrapping ErrUnauthenticated when they are not valid.
func (s *Service) Authenticate(ctx context.Context, c Credentials) (*Principal, error) {
	if c.Authorization != "" {
		scheme, tok, ok := strings.Cut(c.Authorization, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return nil, fmt.Errorf("%w: want Authorization: Bearer <token>", ErrUnauthenticated)
		}
		tok = strings.TrimSpace(tok)
		if strings.HasPrefix(tok, APITokenPrefix) {
			return s.apiToken(ctx, tok)
		}
		return s.session(ctx, tok, false)
	}
	if c.Cookie != "" {
		return s.session(ctx, c.Cookie, true)
	}
	return nil, nil
}

func (s *Service) session(ctx context.Context, tok string, cookie bool) (*Principal, error) {
	var c claims
	_, err := jwt.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return s.keys.lookup(ctx, kid)
	}, jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired())
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: session token: %v", ErrUnauthenticated, err)
	}
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: session token has no user", ErrUnauthenticated)
	}
	u, err := s.store.User(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: the user is gone", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	if u.TokenGen != c.Gen {
		return nil, fmt.Errorf("%w: the session has ended (signed out, password changed or key rotated)", ErrUnauthenticated)
	}
	if u.Disabled {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, ErrDisabled)
	}
	return &Principal{Kind: KindUser, UserID: u.ID, Name: u.Username, Grants: Grants(u.Grants), Cookie: cookie, CSRF: c.CSRF}, nil
}

// Grants converts stored grants, skipping roles this version does not know.
func Grants(gs []storage.Grant) []Grant {
	out := make([]Grant, 0, len(gs))
	for _, g := range gs {
		if r, err := ParseRole(g.Role); err == nil {
			out = append(out, Grant{NamespaceID: g.NamespaceID, Role: r})
		}
	}
	return out
}

func (s *Service) apiToken(ctx context.Context, tok string) (*Principal, error) {
	t, err := s.store.APITokenByHash(ctx, HashAPIToken(tok))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown API token", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	if t.RevokedAt != nil {
		return nil, fmt.Errorf("%w: the API token was revoked", ErrUnauthenticated)
	}
	role, err := ParseRole(t.Role)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	now := time.Now()
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) >= TouchEvery {
		if err := s.store.TouchAPIToken(ctx, t.ID, now, TouchEvery); err != nil {
			s.log.WarnContext(ctx, "record API token use", "token", t.ID, "err", err)
		}
	}
	return &Principal{Kind: KindToken, TokenID: t.ID, Name: t.Name, Grants: []Grant{{NamespaceID: t.NamespaceID, Role: role}}}, nil
}

// CheckCSRF refuses a change (any method but GET, HEAD, OPTIONS) made with the session cookie
// unless header repeats the session's CSRF value.
func CheckCSRF(p *Principal, method, header string) error {
	if p == nil || !p.Cookie {
		return nil
	}
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return nil
	}
	if header == "" || subtle.ConstantTimeCompare([]byte(header), []byte(p.CSRF)) != 1 {
		return fmt.Errorf("%w: a change made with the session cookie needs the %s header (the %s cookie's value)",
			ErrForbidden, CSRFHeader, CSRFCookie)
	}
	return nil
}

// NewAPIToken returns a new API token's secret, the hash to store and a prefix to show.
func NewAPIToken() (secret, hash, prefix string) {
	secret = APITokenPrefix + randomString(30)
	return secret, HashAPIToken(secret), secret[:10]
}

// HashAPIToken is the hex SHA-256 of an API token, the only form stored.
func HashAPIToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewPassword returns a random password for a generated account.
func NewPassword() string { return randomString(18) }

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
