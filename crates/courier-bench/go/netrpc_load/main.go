// The Go side of `courier-bench netrpc`, standard library only: with
// -serve, Go's own net/rpc server (rpc.Register + rpc.ServeConn) serving
// Arith.Add; otherwise a load generator of rpc.Dial clients calling
// Arith.Add on -addr for -duration with -conns connections and -inflight
// calls in flight on each, printing one JSON line: calls, seconds, errors
// and latency percentiles in microseconds.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type Args struct{ X, Y int }

type Arith struct{}

func (Arith) Add(args *Args, reply *int) error {
	*reply = args.X + args.Y
	return nil
}

func serve() {
	if err := rpc.RegisterName("Arith", Arith{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			return
		}
		go rpc.ServeConn(conn)
	}
}

type result struct {
	Calls   int64   `json:"calls"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	P50     float64 `json:"p50_us"`
	P99     float64 `json:"p99_us"`
	First   string  `json:"first_error,omitempty"`
}

func main() {
	serveFlag := flag.Bool("serve", false, "serve Arith with Go's net/rpc")
	addr := flag.String("addr", "", "server to load")
	conns := flag.Int("conns", 1, "connections")
	inflight := flag.Int("inflight", 1, "calls in flight per connection")
	duration := flag.Duration("duration", 5*time.Second, "measured time")
	warmup := flag.Duration("warmup", time.Second, "unmeasured time first")
	flag.Parse()
	if *serveFlag {
		serve()
		return
	}
	var measuring atomic.Bool
	var stop atomic.Bool
	var calls, errors atomic.Int64
	var firstMu sync.Mutex
	first := ""
	latencies := make([][]float64, *conns**inflight)
	var wg sync.WaitGroup
	for c := 0; c < *conns; c++ {
		client, err := rpc.Dial("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(1)
		}
		for i := 0; i < *inflight; i++ {
			wg.Add(1)
			go func(slot int) {
				defer wg.Done()
				n := 0
				for !stop.Load() {
					var reply int
					started := time.Now()
					err := client.Call("Arith.Add", &Args{n, 1}, &reply)
					if !measuring.Load() {
						n++
						continue
					}
					if err != nil || reply != n+1 {
						errors.Add(1)
						firstMu.Lock()
						if first == "" {
							first = fmt.Sprint(err, " reply ", reply)
						}
						firstMu.Unlock()
					} else {
						calls.Add(1)
						latencies[slot] = append(latencies[slot], float64(time.Since(started).Nanoseconds())/1000)
					}
					n++
				}
			}(c**inflight + i)
		}
	}
	time.Sleep(*warmup)
	measuring.Store(true)
	started := time.Now()
	time.Sleep(*duration)
	measuring.Store(false)
	seconds := time.Since(started).Seconds()
	stop.Store(true)
	wg.Wait()
	var all []float64
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Float64s(all)
	at := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return all[int(float64(len(all)-1)*q)]
	}
	out, _ := json.Marshal(result{calls.Load(), errors.Load(), seconds, at(0.5), at(0.99), first})
	fmt.Println(string(out))
}
