// Package sqltext is a small lexer for ClickHouse SQL text that Cordon wrote
// itself: it splits the store's migration files into statements and finds
// where a SETTINGS clause can be added to a statement. It does not parse
// SQL; it only separates string literals, quoted identifiers and comments
// from the words and punctuation around them.
//
// It is not a security boundary and must never judge untrusted SQL: it does
// not know every literal form the engine accepts ($$…$$ strings, Unicode
// quotes), so text after them is hidden from it (issue 8). Analysts' queries
// are judged by the store's gate on the engine's own parse (pkg/store,
// gate.go); the only analyst text that reaches this package is the engine's
// normalised form of a query the gate has accepted as one SELECT without a
// SETTINGS, FORMAT or INTO OUTFILE clause, to which chdbstore adds the
// store's settings.
package sqltext

import (
	"errors"
	"fmt"
	"strings"
)

// Token is one word or punctuation character outside literals and comments.
type Token struct {
	// Text is the word (as written) or the punctuation character.
	Text string
	// Word is true for identifiers and keywords (bare words).
	Word bool
	// Depth is the parenthesis depth the token is at (0 = top level).
	Depth int
	// Pos is the byte offset of the token in the query.
	Pos int
}

// Is reports whether the token is the bare word kw, case-insensitively.
func (t Token) Is(kw string) bool { return t.Word && strings.EqualFold(t.Text, kw) }

// Query is a lexed query.
type Query struct {
	// Text is the query without a trailing semicolon and trailing blanks.
	Text string
	// Tokens are the words and punctuation outside literals and comments.
	Tokens []Token
}

// Errors returned by Lex.
var (
	ErrEmpty       = errors.New("empty query")
	ErrMultiple    = errors.New("more than one statement")
	ErrUnterminate = errors.New("unterminated literal or comment")
	ErrParens      = errors.New("unbalanced parentheses")
)

// Lex splits q into tokens. It rejects an empty query, more than one
// statement (any semicolon but a trailing one, even inside a comment, to stay
// on the safe side), unterminated literals or comments, and unbalanced
// parentheses.
func Lex(q string) (*Query, error) {
	var toks []Token
	depth := 0
	end := len(q) // end of the statement (before a trailing semicolon)
	semicolon := -1
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(q) && q[i+1] == '-', c == '#':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			if strings.IndexByte(q[i:i+j], ';') >= 0 {
				return nil, fmt.Errorf("%w: a semicolon in a comment", ErrMultiple)
			}
			i += j
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			j, err := skipBlockComment(q, i)
			if err != nil {
				return nil, err
			}
			if strings.IndexByte(q[i:j], ';') >= 0 {
				return nil, fmt.Errorf("%w: a semicolon in a comment", ErrMultiple)
			}
			i = j
		case c == '\'' || c == '"' || c == '`':
			j, err := skipQuoted(q, i)
			if err != nil {
				return nil, err
			}
			if semicolon >= 0 {
				return nil, ErrMultiple
			}
			if c != '\'' {
				// A quoted identifier counts as a word for the checks below.
				toks = append(toks, Token{Text: q[i+1 : j-1], Word: true, Depth: depth, Pos: i})
			} else {
				toks = append(toks, Token{Text: q[i:j], Depth: depth, Pos: i})
			}
			i = j
		case c == ';':
			if semicolon >= 0 {
				return nil, ErrMultiple
			}
			semicolon = i
			end = i
			i++
		default:
			if semicolon >= 0 {
				return nil, ErrMultiple
			}
			if isWordByte(c) {
				j := i
				for j < len(q) && isWordByte(q[j]) {
					j++
				}
				toks = append(toks, Token{Text: q[i:j], Word: true, Depth: depth, Pos: i})
				i = j
				continue
			}
			if c == '(' {
				depth++
			}
			toks = append(toks, Token{Text: string(c), Depth: depth, Pos: i})
			if c == ')' {
				depth--
				if depth < 0 {
					return nil, ErrParens
				}
				toks[len(toks)-1].Depth = depth
			}
			i++
		}
	}
	if depth != 0 {
		return nil, ErrParens
	}
	if len(toks) == 0 {
		return nil, ErrEmpty
	}
	return &Query{Text: strings.TrimRight(q[:end], " \t\r\n\f\v"), Tokens: toks}, nil
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '$' || c >= 0x80
}

// skipQuoted returns the offset just past the literal or quoted identifier
// starting at q[i]. Backslash escapes and doubled quotes are both accepted,
// as ClickHouse does.
func skipQuoted(q string, i int) (int, error) {
	quote := q[i]
	for j := i + 1; j < len(q); j++ {
		switch q[j] {
		case '\\':
			j++
		case quote:
			if j+1 < len(q) && q[j+1] == quote {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("%w: %c at offset %d", ErrUnterminate, quote, i)
}

// skipBlockComment returns the offset just past the (possibly nested) block
// comment starting at q[i].
func skipBlockComment(q string, i int) (int, error) {
	nest := 0
	for j := i; j+1 < len(q); j++ {
		switch {
		case q[j] == '/' && q[j+1] == '*':
			nest++
			j++
		case q[j] == '*' && q[j+1] == '/':
			nest--
			j++
			if nest == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: /* at offset %d", ErrUnterminate, i)
}

// First returns the first token.
func (q *Query) First() Token { return q.Tokens[0] }

// Has reports whether the word sequence kws (e.g. "INTO", "OUTFILE") occurs
// anywhere in the query, at any depth.
func (q *Query) Has(kws ...string) bool {
	for i := range q.Tokens {
		if i+len(kws) > len(q.Tokens) {
			return false
		}
		match := true
		for k, kw := range kws {
			if !q.Tokens[i+k].Is(kw) {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// TrailingFormat reports whether the query ends in a top-level
// "FORMAT <name>" clause (optionally followed by a SETTINGS clause), and
// returns the format name.
func (q *Query) TrailingFormat() (string, bool) {
	for i, t := range q.Tokens {
		if t.Depth != 0 || !t.Is("FORMAT") || i+1 >= len(q.Tokens) || !q.Tokens[i+1].Word {
			continue
		}
		rest := q.Tokens[i+2:]
		if len(rest) == 0 || rest[0].Is("SETTINGS") {
			return q.Tokens[i+1].Text, true
		}
	}
	return "", false
}

// hasTopLevelSettings reports whether the query has a top-level
// "SETTINGS name =" clause.
func (q *Query) hasTopLevelSettings() bool {
	for i, t := range q.Tokens {
		if t.Depth == 0 && t.Is("SETTINGS") && i+2 < len(q.Tokens) && q.Tokens[i+1].Word && q.Tokens[i+2].Text == "=" {
			return true
		}
	}
	return false
}

// WithSettings returns the query with settings ("name = value" items, values
// already SQL literals) added to its top-level SETTINGS clause, or in a new
// one. The settings are added last, on a new line, so a trailing line comment
// cannot swallow them. An empty list returns the text unchanged.
func (q *Query) WithSettings(settings []string) string {
	if len(settings) == 0 {
		return q.Text
	}
	sep := "\nSETTINGS "
	if q.hasTopLevelSettings() {
		sep = "\n, "
	}
	return q.Text + sep + strings.Join(settings, ", ")
}
