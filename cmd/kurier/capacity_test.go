package main

// BenchmarkEPSProcesses measures sealed synchronous calls between two
// endpoint servers running as the real binaries, through a real relay, and
// the CPU each process spends per call (from /proc/<pid>/stat). Besides
// the calls per second of the whole setup on this machine (callers, both
// endpoint servers, relay and the vendor's software sharing its cores), it
// reports each endpoint server's CPU per call and so how many calls an
// endpoint server with two cores of its own could serve:
//
//	go test -run '^$' -bench EPSProcesses -benchtime 20000x ./cmd/kurier
//
// Figures: docs/benchmarks.md, "Endpoint server".

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// cpuTicks returns the user and system CPU time of a process, in clock
// ticks (USER_HZ, 100 per second on Linux).
func cpuTicks(b *testing.B, pid int) int64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name in parentheses may hold spaces: split after it.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64) // field 14 of stat
	stime, _ := strconv.ParseInt(fields[12], 10, 64) // field 15
	return utime + stime
}

const ticksPerSecond = 100 // USER_HZ on Linux

// peakRSS returns a process's peak resident set (VmHWM), in MiB.
func peakRSS(b *testing.B, pid int) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func BenchmarkEPSProcesses(b *testing.B) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Fatalf("this benchmark reads process CPU times from /proc (Linux): %v", err)
	}
	n, states := setupNetwork(b,
		[]string{"hd-1", "--role", "health-office", "--display-name", "Gesundheitsamt 1", "--service", "submit"},
		[]string{"vendor-a", "--role", "provider", "--display-name", "Vendor A", "--service", "guest-lists"})
	// The vendor's software answers every call at once.
	var answered atomic.Int64
	sw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var call struct {
			ID json.RawMessage `json:"id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&call); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		answered.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"guests":1}}`, call.ID)
	}))
	b.Cleanup(sw.Close)
	officeAPI := freePort(b, "tcp")
	office := start(b, n.kurier, append([]string{"eps", "--state", states["hd-1"], "--listen", officeAPI, "--log-level", "warn"}, daemonArgs("")...)...)
	vendor := start(b, n.kurier, append([]string{"eps", "--state", states["vendor-a"], "--listen", freePort(b, "tcp"),
		"--callback", sw.URL, "--log-level", "warn"}, daemonArgs("")...)...)

	guests := bytes.Repeat([]byte(`{"name":"Erika Mustermann","phone":"+49 30 1234567"},`), 20)
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"vendor-a.guest-lists","params":{"location":"Café Rot","guests":[` +
		string(guests[:len(guests)-1]) + `]}}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	b.Cleanup(client.CloseIdleConnections)
	call := func() error {
		resp, err := client.Post("http://"+officeAPI+"/", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if !bytes.Contains(rb, []byte(`"guests":1`)) {
			return fmt.Errorf("HTTP %d: %s", resp.StatusCode, rb)
		}
		return nil
	}
	var lastErr error
	waitFor(b, "a call through the relay", 60*time.Second, func() bool {
		lastErr = call()
		return lastErr == nil
	})
	for range 200 { // warm connections, sessions, caches
		if err := call(); err != nil {
			b.Fatal(err)
		}
	}

	pids := map[string]int{"office-eps": office.cmd.Process.Pid, "vendor-eps": vendor.cmd.Process.Pid, "relay": n.relay.cmd.Process.Pid}
	before := map[string]int64{}
	for k, pid := range pids {
		before[k] = cpuTicks(b, pid)
	}
	startCalls := answered.Load()
	b.SetParallelism(8)
	b.ResetTimer()
	began := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := call(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(began)
	b.StopTimer()
	calls := answered.Load() - startCalls
	if calls < int64(b.N) {
		b.Fatalf("%d calls reached the vendor's software, %d were made", calls, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	for _, k := range []string{"office-eps", "vendor-eps", "relay"} {
		cpu := float64(cpuTicks(b, pids[k])-before[k]) / ticksPerSecond // seconds
		perCall := cpu / float64(b.N)
		b.ReportMetric(perCall*1e6, k+"-cpu-µs/call")
		if k != "relay" && perCall > 0 {
			b.ReportMetric(2/perCall, k+"-calls/s-on-2-cores")
			b.ReportMetric(peakRSS(b, pids[k]), k+"-peak-RSS-MiB")
		}
	}
}
