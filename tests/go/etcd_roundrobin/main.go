// Command etcd_roundrobin is a grpc-go client that finds a service through
// etcd's naming resolver (go.etcd.io/etcd/clientv3/naming/resolver, the
// etcd 3.4 client Debian ships as golang-etcd-server-dev) and spreads
// unary calls over its instances with grpc-go's round_robin balancer, as
// a Go shop would call a courier service registered in etcd.
//
// It needs no generated code: requests and replies are JSON, sent with
// content type application/grpc+json through a codec registered here, so
// it can call courier's serde services (courier serves them in that
// content type over gRPC).
//
// It calls until -expect distinct answers have been seen (round_robin
// only spreads calls over the connections that are ready), then makes
// -calls counted calls, and prints one JSON line on stdout:
//
//	{"warmup":3,"answers":{"a":50,"b":50},"failures":[]}
//
// Every reply is taken as the answerer's name (a JSON string), so the
// answers count calls per provider. It exits 1 on a setup error or when
// -timeout passes; a failed call is reported in "failures", not fatal, so
// the caller sees all of them. If grpc-go panics (as it does on endpoint
// metadata it cannot hash), the process dies with Go's panic message on
// stderr and exit status 2.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/encoding"
)

// jsonCodec marshals messages as JSON; grpc-go picks it for the content
// subtype "json" (application/grpc+json).
type jsonCodec struct{}

func (jsonCodec) Marshal(v interface{}) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v interface{}) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                               { return "json" }

type summary struct {
	Warmup   int            `json:"warmup"`
	Answers  map[string]int `json:"answers"`
	Failures []string       `json:"failures"`
}

func main() {
	endpoints := flag.String("etcd", "", "etcd endpoints, comma-separated host:port")
	service := flag.String("service", "", "the service name: keys <service>/<addr>, dialled as etcd:///<service>")
	method := flag.String("method", "", "the full method name, /Service/Method")
	request := flag.String("request", "{}", "the request, as JSON")
	calls := flag.Int("calls", 100, "counted calls, after the warm-up")
	expect := flag.Int("expect", 1, "distinct answers to see before counting")
	perCall := flag.Duration("call-timeout", 5*time.Second, "deadline of each call")
	timeout := flag.Duration("timeout", 60*time.Second, "give up (exit 1) after this long")
	flag.Parse()
	if *endpoints == "" || *service == "" || *method == "" {
		log.Fatal("usage: etcd_roundrobin -etcd host:port -service NAME -method /Service/Method")
	}
	// A hung dependency must end the run, not the test waiting on it.
	time.AfterFunc(*timeout, func() {
		fmt.Fprintf(os.Stderr, "etcd_roundrobin: not done within %v\n", *timeout)
		os.Exit(1)
	})
	encoding.RegisterCodec(jsonCodec{})

	var body interface{}
	if err := json.Unmarshal([]byte(*request), &body); err != nil {
		log.Fatalf("-request is not JSON: %v", err)
	}
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		log.Fatalf("etcd client: %v", err)
	}
	defer etcd.Close()
	builder, err := resolver.NewBuilder(etcd)
	if err != nil {
		log.Fatalf("etcd resolver: %v", err)
	}
	conn, err := grpc.Dial("etcd:///"+*service,
		grpc.WithResolvers(builder),
		grpc.WithInsecure(),
		// The service config form of grpc.WithBalancerName("round_robin"),
		// which grpc-go has deprecated.
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype("json")),
	)
	if err != nil {
		log.Fatalf("dial: %v", err)
	}
	defer conn.Close()

	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), *perCall)
		defer cancel()
		var reply string
		err := conn.Invoke(ctx, *method, body, &reply)
		return reply, err
	}
	out := summary{Answers: map[string]int{}, Failures: []string{}}
	seen := map[string]bool{}
	for len(seen) < *expect {
		reply, err := call()
		out.Warmup++
		if err != nil {
			out.Failures = append(out.Failures, "warm-up: "+err.Error())
			// No instance known yet, or none ready: try again shortly.
			time.Sleep(20 * time.Millisecond)
			continue
		}
		seen[reply] = true
	}
	for i := 0; i < *calls; i++ {
		reply, err := call()
		if err != nil {
			out.Failures = append(out.Failures, err.Error())
			continue
		}
		out.Answers[reply]++
	}
	line, err := json.Marshal(out)
	if err != nil {
		log.Fatalf("summary: %v", err)
	}
	fmt.Println(string(line))
}
