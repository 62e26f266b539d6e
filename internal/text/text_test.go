package text

import "testing"

func TestList(t *testing.T) {
	for _, tc := range []struct {
		items []string
		max   int
		want  string
	}{
		{nil, 3, ""},
		{[]string{"a", "b"}, 3, "a, b"},
		{[]string{"a", "b", "c", "d"}, 2, "a, b, and 2 more"},
		{[]string{"x\x1b[31m", "y"}, 5, `x\x1b[31m, y`},
		{[]string{"a"}, 0, ", and 1 more"},
		{[]string{"a"}, -1, ", and 1 more"},
	} {
		if got := List(tc.items, tc.max); got != tc.want {
			t.Errorf("List(%q, %d) = %q, want %q", tc.items, tc.max, got, tc.want)
		}
	}
}

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"esc\x1b[2J", 20, `esc\x1b[2J`},
		{"c1 \u009b bidi \u202e", 20, `c1 \u009b bidi \u202e`},
		{"bad \xff", 10, `bad \xff`},
		{"long string", 4, "long…"},
	} {
		if got := Clean(tc.in, tc.max); got != tc.want {
			t.Errorf("Clean(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
