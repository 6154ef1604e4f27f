package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"
)

// Tokens is a set of API tokens, kept only as SHA-256 digests so a memory
// dump or a log line of the configuration does not reveal them.
type Tokens struct {
	digests [][sha256.Size]byte
}

// MinTokenLen is the shortest plain token accepted: shorter ones are
// guessable.
const MinTokenLen = 16

// ParseTokens reads a comma-separated list in which each entry is a plain
// token or "sha256:" followed by the hex SHA-256 of one (so the plain token
// never has to be stored in configuration). Empty entries are ignored; an
// empty list gives an empty set.
func ParseTokens(list string) (*Tokens, error) {
	t := &Tokens{}
	for i, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		switch {
		case entry == "":
			continue
		case strings.HasPrefix(entry, "sha256:"):
			raw, err := hex.DecodeString(strings.TrimPrefix(entry, "sha256:"))
			if err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("API token %d: sha256: must be followed by 64 hex digits", i+1)
			}
			t.digests = append(t.digests, [sha256.Size]byte(raw))
		case len(entry) < MinTokenLen:
			return nil, fmt.Errorf("API token %d: plain tokens must be at least %d characters", i+1, MinTokenLen)
		default:
			t.digests = append(t.digests, sha256.Sum256([]byte(entry)))
		}
	}
	return t, nil
}

// Len is the number of tokens.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.digests)
}

// Valid reports whether token is one of the set. It compares digests in
// constant time and always checks every entry, so timing tells nothing
// about which token, or how much of one, matched.
func (t *Tokens) Valid(token string) bool {
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for _, d := range t.digests {
		ok |= subtle.ConstantTimeCompare(sum[:], d[:])
	}
	return ok == 1
}

// securityScheme is the name of the bearer scheme in the OpenAPI document.
const securityScheme = "bearer"

var bearer = []map[string][]string{{securityScheme: {}}}

var errNoToken = errors.New("missing or invalid API token: send Authorization: Bearer <token>")

// requireToken is a Huma middleware that refuses operations declaring the
// bearer scheme unless the request carries a valid token.
func requireToken(api huma.API, tokens *Tokens) func(huma.Context, func(huma.Context)) {
	return func(ctx huma.Context, next func(huma.Context)) {
		if tokens.Len() == 0 || len(ctx.Operation().Security) == 0 {
			next(ctx)
			return
		}
		h := ctx.Header("Authorization")
		scheme, token, found := strings.Cut(h, " ")
		if found && strings.EqualFold(scheme, "Bearer") && tokens.Valid(strings.TrimSpace(token)) {
			next(ctx)
			return
		}
		ctx.SetHeader("WWW-Authenticate", `Bearer realm="opsbox"`)
		_ = huma.WriteErr(api, ctx, http.StatusUnauthorized, errNoToken.Error())
	}
}
