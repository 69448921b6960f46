package config

import (
	"fmt"
	"strings"
)

type tokenKind int

const (
	tokEOF    tokenKind = iota
	tokWord             // a run of characters without whitespace or { } ; " #
	tokString           // a "double quoted" string, unescaped
	tokLBrace           // {
	tokRBrace           // }
	tokSemi             // ;
)

func (k tokenKind) String() string {
	switch k {
	case tokEOF:
		return "end of file"
	case tokWord:
		return "word"
	case tokString:
		return "string"
	case tokLBrace:
		return `"{"`
	case tokRBrace:
		return `"}"`
	case tokSemi:
		return `";"`
	}
	return fmt.Sprintf("tokenKind(%d)", int(k))
}

type token struct {
	kind tokenKind
	text string // the word, or the unescaped string
	line int
}

// describe renders a token for an error message.
func (t token) describe() string {
	switch t.kind {
	case tokWord:
		return fmt.Sprintf("%q", t.text)
	case tokString:
		return fmt.Sprintf("string %q", t.text)
	}
	return t.kind.String()
}

// lexer splits drbd.conf text into tokens. As in drbdadm, '#' starts a
// comment that runs to the end of the line (outside quotes), and inside
// quotes a backslash makes the next character literal (so \" and \\ work;
// there are no C escapes). A string may not span lines.
type lexer struct {
	file string
	src  []byte
	off  int
	line int
}

func newLexer(file string, src []byte) *lexer {
	l := &lexer{file: file, src: src, line: 1}
	if len(src) >= 3 && src[0] == 0xef && src[1] == 0xbb && src[2] == 0xbf {
		l.off = 3 // a UTF-8 byte order mark
	}
	return l
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// isSpecial reports whether c ends a word.
func isSpecial(c byte) bool {
	return isSpace(c) || c == '{' || c == '}' || c == ';' || c == '"' || c == '#'
}

func (l *lexer) next() (token, error) {
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch {
		case c == '\n':
			l.line++
			l.off++
		case isSpace(c):
			l.off++
		case c == '#':
			for l.off < len(l.src) && l.src[l.off] != '\n' {
				l.off++
			}
		case c == '{':
			l.off++
			return token{kind: tokLBrace, text: "{", line: l.line}, nil
		case c == '}':
			l.off++
			return token{kind: tokRBrace, text: "}", line: l.line}, nil
		case c == ';':
			l.off++
			return token{kind: tokSemi, text: ";", line: l.line}, nil
		case c == '"':
			return l.quoted()
		default:
			start := l.off
			for l.off < len(l.src) && !isSpecial(l.src[l.off]) {
				l.off++
			}
			return token{kind: tokWord, text: string(l.src[start:l.off]), line: l.line}, nil
		}
	}
	return token{kind: tokEOF, line: l.line}, nil
}

func (l *lexer) quoted() (token, error) {
	line := l.line
	l.off++ // opening quote
	var b strings.Builder
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch c {
		case '"':
			l.off++
			return token{kind: tokString, text: b.String(), line: line}, nil
		case '\n':
			return token{}, errorf(Pos{l.file, line}, "unterminated string (a quoted string must end on the line it starts)")
		case '\\':
			if l.off+1 < len(l.src) && l.src[l.off+1] != '\n' {
				b.WriteByte(l.src[l.off+1])
				l.off += 2
				continue
			}
			return token{}, errorf(Pos{l.file, line}, "unterminated string (a quoted string must end on the line it starts)")
		default:
			b.WriteByte(c)
			l.off++
		}
	}
	return token{}, errorf(Pos{l.file, line}, "unterminated string (a quoted string must end on the line it starts)")
}
