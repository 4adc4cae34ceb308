// A Go net/http service as the security suite's recording app (test/security/helpers/apps.ts):
// standard library only, built offline (GO111MODULE=off, GOPROXY=off) by the test.
//
// It serves HTTP/1.1 on 127.0.0.1, port 0, prints "PORT <n>", and appends one JSON line per
// request Go's server parsed and handed to its handler to $RECORD_FILE, in the shape of
// apps/record.py: method, target (r.RequestURI, raw), path (r.URL.Path, percent-decoded), route
// (what Go's own routing acts on), headers as r.Header gives them (names canonicalised by
// textproto.CanonicalMIMEHeaderKey, duplicates merged into one key with several values: one pair
// per value here), trailers (r.Trailer), body length.
//
// The handler is what a typical Go service runs: an http.ServeMux with an "/items/" pattern and a
// catch-all "/", behind a logging middleware (the recorder). The route is Go's: the mux routes on
// r.URL.Path, the decoded path (so "%2F" is a "/" to it; r.URL.RawPath keeps the escaped form),
// and answers a path that is not clean (path.Clean: "..", ".", "//") or the bare "/items" with a
// 301 to the clean one instead of calling a handler; the route of such a request is the redirect's
// target path (where a client following it would go). Requests Go's server refuses while parsing
// (400 with no handler called: two Host fields, a malformed Host, an invalid header name, a target
// url.ParseRequestURI refuses, ...) are never recorded: no handler saw them.
//
// HTTP/1.1 only: net/http 1.19 speaks cleartext HTTP/2 (h2c) only with golang.org/x/net/http2/h2c,
// which is not in the standard library.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

const appName = "go:net/http"

type record struct {
	App              string     `json:"app"`
	Method           string     `json:"method"`
	Target           string     `json:"target"`
	Path             string     `json:"path"`
	RawPath          string     `json:"rawPath"`
	Route            string     `json:"route"`
	Handler          string     `json:"handler"`
	Pattern          string     `json:"pattern"`
	Status           int        `json:"status"`
	Location         string     `json:"location,omitempty"`
	Proto            string     `json:"proto"`
	Host             string     `json:"host"`
	Query            string     `json:"query"`
	Headers          [][]string `json:"headers"`
	Trailers         [][]string `json:"trailers"`
	TransferEncoding []string   `json:"transferEncoding"`
	ContentLength    int64      `json:"contentLength"`
	BodyBytes        int64      `json:"bodyBytes"`
}

var (
	mu  sync.Mutex
	out *os.File
)

func write(rec record) {
	line, err := json.Marshal(rec)
	if err != nil {
		panic(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if _, err := out.Write(append(line, '\n')); err != nil {
		panic(err)
	}
}

// pairs lists a header map as [name, value] pairs, one per value, names sorted (Go's map has no order).
func pairs(h http.Header) [][]string {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	sort.Strings(names)
	list := [][]string{}
	for _, name := range names {
		for _, value := range h[name] {
			list = append(list, []string{name, value})
		}
	}
	return list
}

// answer is what both handlers write: which one ran, and the request as it saw it.
func answer(handler string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Handler", handler)
		body, _ := json.Marshal(map[string]string{"app": appName, "handler": handler, "method": r.Method, "path": r.RequestURI, "route": r.URL.Path})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// recorder is the middleware: it reads the body (so the trailers are known), lets the mux answer,
// and records the request with the route the mux took.
func recorder(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size, _ := io.Copy(io.Discard, r.Body)
		// Every answer names the app (the suite tells app answers from the sidecar's by it).
		w.Header().Set("X-App", appName)
		_, pattern := mux.Handler(r)
		sw := &statusWriter{ResponseWriter: w}
		mux.ServeHTTP(sw, r)
		rec := record{
			App:              appName,
			Method:           r.Method,
			Target:           r.RequestURI,
			Path:             r.URL.Path,
			RawPath:          r.URL.RawPath,
			Route:            r.URL.Path,
			Handler:          w.Header().Get("X-Handler"),
			Pattern:          pattern,
			Status:           sw.status,
			Proto:            r.Proto,
			Host:             r.Host,
			Query:            r.URL.RawQuery,
			TransferEncoding: r.TransferEncoding,
			ContentLength:    r.ContentLength,
			BodyBytes:        size,
			Trailers:         pairs(r.Trailer),
		}
		if rec.TransferEncoding == nil {
			rec.TransferEncoding = []string{}
		}
		// Go's server moves Host out of r.Header into r.Host; list it as the header it came as.
		rec.Headers = append([][]string{{"Host", r.Host}}, pairs(r.Header)...)
		if rec.Handler == "" {
			// No handler ran: the mux redirected (301, a clean path or "/items" -> "/items/") or
			// refused ("*": 400). A client following the redirect asks for Location's path.
			rec.Handler = "mux"
			rec.Location = w.Header().Get("Location")
			if loc, err := url.Parse(rec.Location); err == nil && rec.Location != "" {
				rec.Route = loc.Path
			}
		}
		write(rec)
	})
}

func main() {
	var err error
	out, err = os.OpenFile(os.Getenv("RECORD_FILE"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "RECORD_FILE:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/items/", answer("items"))
	mux.Handle("/", answer("catch-all"))
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("PORT %d\n", listener.Addr().(*net.TCPAddr).Port)
	server := &http.Server{Handler: recorder(mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
