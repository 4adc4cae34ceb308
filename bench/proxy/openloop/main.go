// Open-loop constant-rate HTTP/1.1 load for bench/proxy (Go standard library only).
//
// Requests arrive on a fixed schedule (RATE per second): a scheduler hands each one to a queue
// when it is due, and its latency is measured from that moment, not from when a connection was
// free to send it, so a stall shows up as the queue it causes (no coordinated omission, as in
// wrk2). The arrival is when the scheduler actually queued it: Go 1.19's timers wake with up to
// ~1 ms of slop, and a late wake-up of the generator is not the server's latency (the requests
// it held back are then queued together, a burstier arrival than the schedule's). CONNECTIONS
// keep-alive connections each take the next queued request. The first WARMUP seconds run at the same rate
// unrecorded. Written in Go because a Node generator (bench/proxy/load.ts until 2026-12-03) needed about a core
// at 14k req/s on this 2-core machine, which is the pair's own CPU.
//
//	go build -o openloop bench/proxy/openloop/main.go
//	openloop -url http://127.0.0.1:PORT/ -rate 8000 -seconds 6 [-c 64] [-warmup 2] [-H 'name: value' ...]
//
// Prints one JSON line: sent, ok, errors, p50Ms, p90Ms, p99Ms, p999Ms, maxMs, achievedRate.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type sample struct {
	latency time.Duration
	ok      bool
}

func main() {
	target := flag.String("url", "", "http://HOST:PORT/path")
	rate := flag.Float64("rate", 1000, "requests per second")
	seconds := flag.Float64("seconds", 5, "recorded duration")
	warmup := flag.Float64("warmup", 2, "unrecorded seconds at the same rate first")
	conns := flag.Int("c", 64, "keep-alive connections")
	var extra headers
	flag.Var(&extra, "H", "extra header 'name: value' (repeatable)")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintln(os.Stderr, "openloop: -url http://HOST:PORT/path is required")
		os.Exit(2)
	}
	path := u.RequestURI()
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, u.Host)
	for _, h := range extra {
		fmt.Fprintf(&req, "%s\r\n", strings.TrimSpace(h))
	}
	req.WriteString("\r\n")
	wire := []byte(req.String())

	interval := time.Duration(float64(time.Second) / *rate)
	total := int((*warmup + *seconds) * *rate)
	recordFrom := int(*warmup * *rate)
	type arrival struct {
		at       time.Time
		recorded bool
	}
	due := make(chan arrival, total)
	start := time.Now().Add(50 * time.Millisecond)
	go func() {
		for i := 0; i < total; i++ {
			at := start.Add(time.Duration(i) * interval)
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
			due <- arrival{time.Now(), i >= recordFrom}
		}
		close(due)
	}()

	var mu sync.Mutex
	samples := make([]sample, 0, total-recordFrom)
	recordedStart := start.Add(time.Duration(recordFrom) * interval)
	var firstRecorded time.Time
	var firstOnce sync.Once
	var wg sync.WaitGroup
	for c := 0; c < *conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn net.Conn
			var reader *bufio.Reader
			for a := range due {
				ok := false
				if conn == nil {
					conn, err = net.Dial("tcp", u.Host)
					if err == nil {
						reader = bufio.NewReaderSize(conn, 64<<10)
					}
				}
				if conn != nil {
					if _, err := conn.Write(wire); err == nil {
						if res, err := http.ReadResponse(reader, nil); err == nil {
							_, err = io.Copy(io.Discard, res.Body)
							res.Body.Close()
							ok = err == nil && res.StatusCode == 200
							if err != nil || res.Close {
								conn.Close()
								conn = nil
							}
						} else {
							conn.Close()
							conn = nil
						}
					} else {
						conn.Close()
						conn = nil
					}
				}
				if a.recorded {
					firstOnce.Do(func() { firstRecorded = a.at })
					latency := time.Since(a.at)
					mu.Lock()
					samples = append(samples, sample{latency, ok})
					mu.Unlock()
				}
			}
			if conn != nil {
				conn.Close()
			}
		}()
	}
	wg.Wait()

	lat := make([]float64, 0, len(samples))
	okCount, errCount := 0, 0
	for _, s := range samples {
		if s.ok {
			okCount++
			lat = append(lat, float64(s.latency)/float64(time.Millisecond))
		} else {
			errCount++
		}
	}
	sort.Float64s(lat)
	at := func(q float64) float64 {
		if len(lat) == 0 {
			return -1
		}
		i := int(q * float64(len(lat)))
		if i >= len(lat) {
			i = len(lat) - 1
		}
		return lat[i]
	}
	maxMs := -1.0
	if len(lat) > 0 {
		maxMs = lat[len(lat)-1]
	}
	// The rate held: recorded requests answered, over the time from the first one's intended
	// start to the last answer (a pair that falls behind stretches it).
	out, _ := json.Marshal(map[string]any{
		"sent": len(samples), "ok": okCount, "errors": errCount,
		"p50Ms": at(0.5), "p90Ms": at(0.9), "p99Ms": at(0.99), "p999Ms": at(0.999), "maxMs": maxMs,
		"achievedRate":    float64(okCount) / time.Since(recordedStart).Seconds(),
		"generatorLateMs": float64(firstRecorded.Sub(recordedStart)) / float64(time.Millisecond),
	})
	fmt.Println(string(out))
}
