package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// flagHelp registers flags under headings, so that --help prints each with its
// description in a group. A flag is added to a group in one line,
// group.StringVar(&o.x, "name", default, "description"); one registered on the FlagSet
// directly still shows, under "Other".
type flagHelp struct {
	fs     *flag.FlagSet
	groups []*flagGroup
	of     map[string]bool // flags registered through a group
}

// flagGroup is one heading of --help and its flags, in the order they were registered.
type flagGroup struct {
	h     *flagHelp
	title string
	names []string
}

func newFlagHelp(fs *flag.FlagSet) *flagHelp {
	return &flagHelp{fs: fs, of: map[string]bool{}}
}

// group starts a heading.
func (h *flagHelp) group(title string) *flagGroup {
	g := &flagGroup{h: h, title: title}
	h.groups = append(h.groups, g)
	return g
}

func (g *flagGroup) add(name string) {
	g.names = append(g.names, name)
	g.h.of[name] = true
}

// StringVar, BoolVar, IntVar, DurationVar and Var are flag.FlagSet's, recording the
// group. In a description, a word in back quotes names the flag's value in --help (as
// for the flag package's PrintDefaults).
func (g *flagGroup) StringVar(p *string, name, value, usage string) {
	g.h.fs.StringVar(p, name, value, usage)
	g.add(name)
}

func (g *flagGroup) BoolVar(p *bool, name string, value bool, usage string) {
	g.h.fs.BoolVar(p, name, value, usage)
	g.add(name)
}

func (g *flagGroup) IntVar(p *int, name string, value int, usage string) {
	g.h.fs.IntVar(p, name, value, usage)
	g.add(name)
}

func (g *flagGroup) DurationVar(p *time.Duration, name string, value time.Duration, usage string) {
	g.h.fs.DurationVar(p, name, value, usage)
	g.add(name)
}

func (g *flagGroup) Var(v flag.Value, name, usage string) {
	g.h.fs.Var(v, name, usage)
	g.add(name)
}

// helpWidth is the width --help wraps descriptions to.
const helpWidth = 80

// write prints the help: the synopsis, then every group with each flag and its
// description, then the flags no group claimed.
func (h *flagHelp) write(w io.Writer, synopsis string) {
	var sb strings.Builder
	sb.WriteString(synopsis)
	groups := h.groups
	var other []string
	h.fs.VisitAll(func(f *flag.Flag) {
		if !h.of[f.Name] {
			other = append(other, f.Name)
		}
	})
	if len(other) > 0 {
		groups = append(groups, &flagGroup{title: "Other", names: other})
	}
	for _, g := range groups {
		if len(g.names) == 0 {
			continue
		}
		fmt.Fprintf(&sb, "\n%s:\n", g.title)
		for _, name := range g.names {
			h.writeFlag(&sb, h.fs.Lookup(name))
		}
	}
	_, _ = io.WriteString(w, sb.String())
}

func (h *flagHelp) writeFlag(sb *strings.Builder, f *flag.Flag) {
	value, usage := flag.UnquoteUsage(f)
	head := "  --" + f.Name
	if value != "" {
		head += " " + value
	}
	if isBool(f) && f.DefValue == "true" {
		head += "=false"
	}
	switch {
	case isBool(f), f.DefValue == "", f.DefValue == "0", f.DefValue == "0s":
	default:
		usage += " (default " + f.DefValue + ")"
	}
	sb.WriteString(head + "\n")
	for _, line := range wrap(usage, helpWidth-6) {
		sb.WriteString("      " + line + "\n")
	}
}

// isBool reports whether f is a boolean flag (given without a value).
func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// wrap breaks s into lines of at most width characters, at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) > width:
			lines = append(lines, line)
			line = word
		default:
			line += " " + word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// closestFlag returns the defined flag nearest to name (a typo or a prefix), or "".
func closestFlag(fs *flag.FlagSet, name string) string {
	best, bestDist := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		d := editDistance(name, f.Name)
		if len(name) >= 3 && strings.HasPrefix(f.Name, name) {
			d = 1
		}
		if d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
