// Command htmlcheck checks, for e2e/html.sh, what a reader of the HTML
// report sees once a real browser has loaded it:
//
//	htmlcheck dom -summary SUMMARY.json [-ladder TEXT]... [-hops N] DOM.html
//	htmlcheck png [-min-bytes N] [-min-colors N] [-color RRGGBB]... SHOT.png
//
// dom parses the DOM Chromium dumped (--dump-dom) and compares it with
// the summary expectscope printed (--summary --format json): the verdict
// and flag counts, one chart mark per negotiation, a ladder holding each
// TEXT, the shipped script having run. png checks a screenshot is not
// blank: its size, how many colours it has, and that the given colours
// (the verdict colours of the stylesheet) are painted.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"os"
	"strconv"
	"strings"

	"golang.org/x/net/html"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: htmlcheck dom|png ...")
		os.Exit(2)
	}
	var errs []string
	switch os.Args[1] {
	case "dom":
		errs = checkDOM(os.Args[2:])
	case "png":
		errs = checkPNG(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "htmlcheck: unknown check %q\n", os.Args[1])
		os.Exit(2)
	}
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, "htmlcheck:", e)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
}

func attr(n *html.Node, k string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == k {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, c string) bool {
	v, _ := attr(n, "class")
	return strings.Contains(" "+v+" ", " "+c+" ")
}

func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}

func elems(n *html.Node, tag string, ok func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && (tag == "" || d.Data == tag) && (ok == nil || ok(d)) {
			out = append(out, d)
		}
	}
	return out
}

func checkDOM(args []string) []string {
	fs := flag.NewFlagSet("dom", flag.ExitOnError)
	summary := fs.String("summary", "", "summary JSON written by expectscope --summary --format json")
	hops := fs.Int("hops", -1, "hop ladders expected (-1: do not check)")
	var ladders list
	fs.Var(&ladders, "ladder", "text some ladder must show (repeatable)")
	fs.Parse(args)
	var errs []string
	fail := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }

	var sum struct {
		Negotiations int            `json:"negotiations"`
		Verdicts     map[string]int `json:"verdicts"`
		Flags        map[string]int `json:"flags"`
	}
	b, err := os.ReadFile(*summary)
	if err == nil {
		err = json.Unmarshal(b, &sum)
	}
	if err != nil {
		return []string{err.Error()}
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return []string{err.Error()}
	}
	doc, err := html.Parse(f)
	if err != nil {
		return []string{err.Error()}
	}
	if root := elems(doc, "html", nil); len(root) != 1 || !hasClass(root[0], "js") {
		fail("the page's script did not run (no class js on <html>): blocked by its CSP?")
	}
	if n := len(elems(doc, "script", nil)); n != 1 {
		fail("%d script elements, want 1", n)
	}
	if sum.Negotiations == 0 {
		fail("the summary counts no negotiation")
	}
	// Verdict and flag counts, as shown in the summary tables.
	shown := map[string]string{}
	for _, td := range elems(doc, "td", func(n *html.Node) bool { return hasClass(n, "count") }) {
		if v, ok := attr(td, "data-verdict"); ok {
			shown["verdict "+v] = strings.TrimSpace(text(td))
		}
		if v, ok := attr(td, "data-flag"); ok {
			shown["flag "+v] = strings.TrimSpace(text(td))
		}
	}
	for v, n := range sum.Verdicts {
		if shown["verdict "+v] != strconv.Itoa(n) {
			fail("verdict %s: page shows %q, summary says %d", v, shown["verdict "+v], n)
		}
	}
	for fl, n := range sum.Flags {
		if shown["flag "+fl] != strconv.Itoa(n) {
			fail("flag %s: page shows %q, summary says %d", fl, shown["flag "+fl], n)
		}
	}
	if card := elems(doc, "", func(n *html.Node) bool { v, _ := attr(n, "id"); return v == "card-negotiations" }); len(card) != 1 ||
		!strings.Contains(text(card[0]), strconv.Itoa(sum.Negotiations)) {
		fail("the negotiations card does not show %d", sum.Negotiations)
	}
	// The chart: one mark per negotiation, each titled with its request.
	charts := elems(doc, "svg", func(n *html.Node) bool { v, _ := attr(n, "id"); return v == "chart" })
	if len(charts) != 1 {
		fail("%d timeline charts", len(charts))
	} else {
		marks := elems(charts[0], "circle", func(n *html.Node) bool { return hasClass(n, "m") })
		if len(marks) != sum.Negotiations {
			fail("%d chart marks, want one per negotiation (%d)", len(marks), sum.Negotiations)
		}
		for _, m := range marks {
			if t := elems(m, "title", nil); len(t) != 1 || !strings.Contains(text(t[0]), "/") {
				fail("a chart mark has no title naming its request")
				break
			}
		}
	}
	// Ladders.
	figs := elems(doc, "figure", func(n *html.Node) bool { return hasClass(n, "ladder") })
	for _, want := range ladders {
		found := false
		for _, fig := range figs {
			if len(elems(fig, "svg", nil)) == 1 && strings.Contains(text(fig), want) {
				found = true
			}
		}
		if !found {
			fail("no ladder shows %q", want)
		}
	}
	if *hops >= 0 {
		n := 0
		for _, fig := range figs {
			for _, t := range elems(fig, "text", func(n *html.Node) bool { return hasClass(n, "lname") }) {
				if text(t) == "proxy" {
					n++
				}
			}
		}
		if n != *hops {
			fail("%d hop ladders (client | proxy | origin), want %d", n, *hops)
		}
	}
	// The table: one row per negotiation.
	if rows := elems(doc, "tr", func(n *html.Node) bool { _, ok := attr(n, "data-verdict"); return ok }); len(rows) != sum.Negotiations {
		fail("%d table rows, want %d", len(rows), sum.Negotiations)
	}
	if len(errs) == 0 {
		fmt.Printf("htmlcheck: DOM ok: %d negotiations, verdicts %v, %d ladders\n", sum.Negotiations, sum.Verdicts, len(figs))
	}
	return errs
}

func checkPNG(args []string) []string {
	fs := flag.NewFlagSet("png", flag.ExitOnError)
	minBytes := fs.Int("min-bytes", 20000, "smallest acceptable file size")
	minColors := fs.Int("min-colors", 16, "fewest distinct colours")
	var colors list
	fs.Var(&colors, "color", "RRGGBB that must be painted somewhere (repeatable)")
	fs.Parse(args)
	var errs []string
	st, err := os.Stat(fs.Arg(0))
	if err != nil {
		return []string{err.Error()}
	}
	if st.Size() < int64(*minBytes) {
		errs = append(errs, fmt.Sprintf("screenshot is %d bytes, want >= %d", st.Size(), *minBytes))
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return []string{err.Error()}
	}
	img, err := png.Decode(f)
	if err != nil {
		return []string{err.Error()}
	}
	seen := map[uint32]int{}
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y++ {
		for x := bnd.Min.X; x < bnd.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			seen[(r>>8)<<16|(g>>8)<<8|b>>8]++
		}
	}
	if len(seen) < *minColors {
		errs = append(errs, fmt.Sprintf("screenshot has %d colours, want >= %d", len(seen), *minColors))
	}
	for _, c := range colors {
		v, err := strconv.ParseUint(strings.TrimPrefix(c, "#"), 16, 32)
		if err != nil {
			return []string{err.Error()}
		}
		if seen[uint32(v)] < 20 {
			errs = append(errs, fmt.Sprintf("colour #%s painted on %d pixels: stylesheet not applied?", c, seen[uint32(v)]))
		}
	}
	if len(errs) == 0 {
		fmt.Printf("htmlcheck: screenshot ok: %dx%d, %d bytes, %d colours\n", bnd.Dx(), bnd.Dy(), st.Size(), len(seen))
	}
	return errs
}
