package config

import "strings"

// stmt is one statement of the syntax tree: a keyword, its arguments and,
// for a section, the statements between its braces. The tree knows nothing
// of keywords; build.go gives it meaning.
type stmt struct {
	pos      Pos
	name     string // the keyword (first word)
	args     []token
	hasBlock bool
	block    []*stmt
}

// words returns the arguments' texts.
func (s *stmt) words() []string {
	w := make([]string, len(s.args))
	for i, a := range s.args {
		w[i] = a.text
	}
	return w
}

// head renders the statement's first line for messages: `resource r0`.
func (s *stmt) head() string {
	return strings.Join(append([]string{s.name}, s.words()...), " ")
}

// maxDepth bounds section nesting; drbd.conf needs 4 (resource, on,
// volume, disk), a `skip` block may hold more.
const maxDepth = 64

// parseFile turns drbd.conf text into statements:
//
//	file      = { statement } .
//	statement = keyword { arg } ( ";" | "{" { statement } "}" [ ";" ] ) .
//
// A keyword is a word (a quoted keyword is an error); an argument is a
// word or a quoted string.
func parseFile(name string, src []byte) ([]*stmt, error) {
	p := &parser{lx: newLexer(name, src)}
	if err := p.advance(); err != nil {
		return nil, err
	}
	return p.list(nil, 0)
}

type parser struct {
	lx  *lexer
	tok token
}

func (p *parser) advance() error {
	t, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) pos(line int) Pos { return Pos{p.lx.file, line} }

// list reads statements up to the closing brace of open (or to the end of
// the file when open is nil).
func (p *parser) list(open *stmt, depth int) ([]*stmt, error) {
	var out []*stmt
	for {
		switch p.tok.kind {
		case tokEOF:
			if open != nil {
				return nil, errorf(open.pos, `missing "}": section "%s {" is not closed before the end of the file`, open.head())
			}
			return out, nil
		case tokRBrace:
			if open == nil {
				return nil, errorf(p.pos(p.tok.line), `unexpected "}" (no section is open)`)
			}
			return out, nil
		case tokSemi:
			return nil, errorf(p.pos(p.tok.line), `unexpected ";" (a statement starts with a keyword)`)
		case tokLBrace:
			return nil, errorf(p.pos(p.tok.line), `unexpected "{" (a section starts with a keyword)`)
		case tokString:
			return nil, errorf(p.pos(p.tok.line), "expected a keyword, found %s", p.tok.describe())
		}
		s, err := p.statement(depth)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
}

func (p *parser) statement(depth int) (*stmt, error) {
	s := &stmt{pos: p.pos(p.tok.line), name: p.tok.text}
	last := p.tok.line
	if err := p.advance(); err != nil {
		return nil, err
	}
	for p.tok.kind == tokWord || p.tok.kind == tokString {
		s.args = append(s.args, p.tok)
		last = p.tok.line
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	switch p.tok.kind {
	case tokSemi:
		return s, p.advance()
	case tokLBrace:
		if depth+1 > maxDepth {
			return nil, errorf(s.pos, "sections nested more than %d deep", maxDepth)
		}
		s.hasBlock = true
		if err := p.advance(); err != nil {
			return nil, err
		}
		block, err := p.list(s, depth+1)
		if err != nil {
			return nil, err
		}
		s.block = block
		if err := p.advance(); err != nil { // the closing brace
			return nil, err
		}
		if p.tok.kind == tokSemi { // tolerate "};"
			return s, p.advance()
		}
		return s, nil
	default:
		return nil, errorf(p.pos(last), `missing ";" after "%s"`, s.head())
	}
}
