package dashboard

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// pages are the dashboard's HTML pages, each the layout with its own
// "title" and "live" templates; "live" is the part a page fetches again
// (?fragment=1) when the event stream says the model changed.
var pages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"pct": func(part, total int) string {
			if total == 0 {
				return "0"
			}
			return strconv.FormatFloat(100*float64(part)/float64(total), 'f', 2, 64)
		},
		"when": func(t any) string {
			switch t := t.(type) {
			case time.Time:
				if t.IsZero() {
					return ""
				}
				return t.UTC().Format("2006-01-02 15:04:05Z")
			case *time.Time:
				if t == nil || t.IsZero() {
					return ""
				}
				return t.UTC().Format("2006-01-02 15:04:05Z")
			}
			return ""
		},
		"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"q":   url.QueryEscape,
		"path": func(id string) string {
			return url.PathEscape(id)
		},
		"rolloutPath": func(id string) string { // a rollback's ID holds a '/'
			parts := strings.Split(id, "/")
			for i := range parts {
				parts[i] = url.PathEscape(parts[i])
			}
			return strings.Join(parts, "/")
		},
		"or": func(s, fallback string) string {
			if s == "" {
				return fallback
			}
			return s
		},
		"add":  func(a, b int) int { return a + b },
		"sub":  func(a, b int) int { return a - b },
		"join": strings.Join,
	}
	out := map[string]*template.Template{}
	for _, page := range []string{"fleet", "rollouts", "rollout", "cluster", "message"} {
		out[page] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+page+".html"))
	}
	return out
}()

// pageData is what the layout renders: the page's view, and what the
// layout needs around it.
type pageData struct {
	Title  string
	Nav    string // "fleet" or "rollouts": the section the page is in
	Events string // the query of the page's event stream
	// Since is the model's version the page was made from: its event
	// stream tells it to fetch its view again at once if the model moved
	// on before the stream opened.
	Since uint64
	Ready bool
	Error string
	View  any
}

func (d *Dashboard) routes() *http.ServeMux {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFiles, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/fleet", http.StatusSeeOther) })
	mux.HandleFunc("GET /events", d.events)

	mux.HandleFunc("GET /fleet", d.page("fleet", d.fleetView))
	mux.HandleFunc("GET /api/fleet", d.api(d.fleetView))
	mux.HandleFunc("GET /clusters/{id}", d.page("cluster", d.clusterView))
	mux.HandleFunc("GET /api/clusters/{id}", d.api(d.clusterView))
	mux.HandleFunc("GET /rollouts", d.page("rollouts", d.rolloutsView))
	mux.HandleFunc("GET /api/rollouts", d.api(d.rolloutsView))
	mux.HandleFunc("GET /rollouts/{id...}", d.page("rollout", d.rolloutView))
	mux.HandleFunc("GET /api/rollouts/{id...}", d.api(d.rolloutView))
	return mux
}

// viewFunc computes a page's view from a request: its title, the query of
// its event stream, the view, or an HTTP status and a message saying
// what is wrong.
type viewFunc func(r *http.Request) (title, events string, view any, status int, msg string)

func (d *Dashboard) fleetView(r *http.Request) (string, string, any, int, string) {
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	v, err := d.model.Fleet(q.Get("selector"), q.Get("by"), page)
	if err != nil {
		return "Fleet", "", v, http.StatusBadRequest, err.Error()
	}
	return "Fleet", "", v, http.StatusOK, ""
}

func (d *Dashboard) clusterView(r *http.Request) (string, string, any, int, string) {
	id := r.PathValue("id")
	v, ok := d.model.Cluster(id)
	if !ok {
		return "Cluster " + id, "", nil, http.StatusNotFound, fmt.Sprintf("no cluster %q: it is not in the inventory, and has no health or history (see the fleet page)", id)
	}
	return "Cluster " + id, "cluster=" + url.QueryEscape(id), v, http.StatusOK, ""
}

func (d *Dashboard) rolloutsView(r *http.Request) (string, string, any, int, string) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	return "Rollouts", "", d.model.Rollouts(page), http.StatusOK, ""
}

func (d *Dashboard) rolloutView(r *http.Request) (string, string, any, int, string) {
	id := r.PathValue("id")
	v, ok := d.model.Rollout(id)
	if !ok {
		return "Rollout " + id, "", nil, http.StatusNotFound, fmt.Sprintf("no rollout %q (see the rollouts page)", id)
	}
	title := "Rollout " + v.Name
	if v.Name == "" {
		title = "Rollout " + id
	}
	return title, "workflow=" + url.QueryEscape(id), v, http.StatusOK, ""
}

// notReady is what a page says while the dashboard reads the log.
const notReady = "reading the fleet from the log; this page fills in by itself when done"

// page serves an HTML page, or its live part alone with ?fragment=1.
func (d *Dashboard) page(name string, view viewFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, since := d.model.Changed() // before the view, so no change falls between
		title, events, v, status, msg := view(r)
		data := pageData{Title: title, Nav: navOf(name), Events: events, Since: since, Ready: d.model.Ready(), View: v}
		tmpl := pages[name]
		if status != http.StatusOK {
			data.Error = msg
			if v == nil { // nothing to show but the message
				tmpl = pages["message"]
			}
		}
		if !data.Ready && status == http.StatusNotFound {
			// Not found yet: the log may hold it. Say so, and let the
			// page fill in once the model is ready.
			status, data.Error, tmpl = http.StatusServiceUnavailable, notReady, pages["message"]
		}
		var buf bytes.Buffer
		which := "layout.html"
		if r.URL.Query().Get("fragment") == "1" {
			which = "live"
		}
		if err := tmpl.ExecuteTemplate(&buf, which, data); err != nil {
			d.log.Error("render page", "page", name, "err", err)
			http.Error(w, "render "+name+": "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = w.Write(buf.Bytes())
	}
}

func navOf(page string) string {
	if page == "rollouts" || page == "rollout" {
		return "rollouts"
	}
	return "fleet"
}

// apiError is the body of an /api/ answer that is not a view.
type apiError struct {
	Error string `json:"error"`
}

// api serves a page's view as JSON.
func (d *Dashboard) api(view viewFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _, v, status, msg := view(r)
		if !d.model.Ready() {
			// A view of a log half read would lie: say when to ask again.
			w.Header().Set("Retry-After", "1")
			status, msg = http.StatusServiceUnavailable, notReady
		}
		var body any = v
		if status != http.StatusOK {
			body = apiError{Error: msg}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(body)
	}
}
