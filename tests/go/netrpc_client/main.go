// A Go net/rpc client, standard library only, calling a courier server as
// Go programs have always called Go servers: rpc.Dial (gob over TCP) or
// rpc.DialHTTP (gob after CONNECT /_goRPC_), client.Call and client.Go.
// It checks every answer itself, prints "ok <check>" for each check that
// passed, and exits 1 with the reason on the first that did not.
package main

import (
	"flag"
	"fmt"
	"net/rpc"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"
)

type Args struct{ X, Y int }

type Inner struct {
	Name string
	Tags []string
}

// Everything: nested structs, slices, maps, pointers and every basic type.
type Everything struct {
	B      bool
	I8     int8
	I16    int16
	I32    int32
	I64    int64
	I      int
	U8     uint8
	U16    uint16
	U32    uint32
	U64    uint64
	U      uint
	Uptr   uintptr
	F32    float32
	F64    float64
	C64    complex64
	C128   complex128
	S      string
	Bytes  []byte
	Inner  Inner
	Ptr    *Inner
	Nums   []int
	Inners []Inner
	Map    map[string]int
	Nested map[string][]Inner
	Nil    *Inner
}

func full() Everything {
	return Everything{
		B: true, I8: -8, I16: -1600, I32: -320000, I64: -1 << 62, I: -42,
		U8: 255, U16: 65535, U32: 1 << 31, U64: 1<<64 - 1, U: 7, Uptr: 0xdeadbeef,
		F32: 1.5, F64: -2.25e300, C64: complex(1.5, -2), C128: complex(-3.25, 4e100),
		S: "héllo, 世界", Bytes: []byte{0, 1, 2, 255},
		Inner:  Inner{Name: "in", Tags: []string{"a", "b"}},
		Ptr:    &Inner{Name: "pointed", Tags: []string{"p"}},
		Nums:   []int{1, -2, 3, 0},
		Inners: []Inner{{Name: "first"}, {Tags: []string{"only tags"}}, {Name: "third", Tags: []string{"x", ""}}},
		Map:    map[string]int{"one": 1, "zero": 0, "minus": -1},
		Nested: map[string][]Inner{"k": {{Name: "n1"}, {Name: "n2", Tags: []string{"t"}}}},
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func ok(check string) { fmt.Println("ok " + check) }

func main() {
	addr := flag.String("addr", "", "host:port of the courier server")
	mode := flag.String("mode", "tcp", "tcp (rpc.Dial) or http (rpc.DialHTTP)")
	flag.Parse()
	var client *rpc.Client
	var err error
	switch *mode {
	case "tcp":
		client, err = rpc.Dial("tcp", *addr)
	case "http":
		client, err = rpc.DialHTTP("tcp", *addr)
	default:
		fail("unknown mode %q", *mode)
	}
	if err != nil {
		fail("dial: %v", err)
	}
	defer client.Close()

	// The classic synchronous call.
	var reply int
	if err := client.Call("ServiceA.Add", &Args{7, 8}, &reply); err != nil || reply != 15 {
		fail("Call ServiceA.Add(7, 8) = %d, %v", reply, err)
	}
	// Zero fields are not sent by gob: X = 0 must still arrive as 0.
	if err := client.Call("ServiceA.Add", &Args{0, 5}, &reply); err != nil || reply != 5 {
		fail("Call ServiceA.Add(0, 5) = %d, %v", reply, err)
	}
	ok("call")

	// Asynchronous calls, collected from their Done channels.
	calls := make([]*rpc.Call, 10)
	replies := make([]int, 10)
	for i := range calls {
		calls[i] = client.Go("ServiceA.Add", &Args{i, 100}, &replies[i], make(chan *rpc.Call, 1))
	}
	for i, call := range calls {
		done := <-call.Done
		if done.Error != nil || replies[i] != i+100 {
			fail("Go ServiceA.Add(%d, 100) = %d, %v", i, replies[i], done.Error)
		}
	}
	ok("go")

	// 100 goroutines x 100 calls on one client.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 100; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				var sum int
				if err := client.Call("ServiceA.Add", &Args{g, i}, &sum); err != nil {
					errs <- err
					return
				}
				if sum != g+i {
					errs <- fmt.Errorf("Add(%d, %d) = %d", g, i, sum)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail("concurrent calls: %v", err)
	}
	ok("concurrent")

	// Every kind of value, both ways: what comes back is what went.
	for _, sent := range []Everything{full(), {}, {S: "only a string", Nums: []int{0}}} {
		var echoed Everything
		if err := client.Call("ServiceA.Echo", &sent, &echoed); err != nil {
			fail("Echo: %v", err)
		}
		if !reflect.DeepEqual(sent, echoed) {
			fail("Echo changed the value:\n sent   %+v\n echoed %+v", sent, echoed)
		}
	}
	ok("echo")

	// Errors are rpc.ServerError strings.
	err = client.Call("ServiceA.Divide", &Args{1, 0}, &reply)
	if _, isServer := err.(rpc.ServerError); !isServer || err.Error() != "division by zero" {
		fail("Divide by zero: %T %v", err, err)
	}
	if err := client.Call("ServiceA.Divide", &Args{9, 3}, &reply); err != nil || reply != 3 {
		fail("Divide(9, 3) = %d, %v", reply, err)
	}
	err = client.Call("ServiceA.Nope", &Args{}, &reply)
	if _, isServer := err.(rpc.ServerError); !isServer || !strings.HasPrefix(err.Error(), "rpc: can't find method ServiceA.Nope") {
		fail("unknown method: %T %v", err, err)
	}
	fmt.Println("unknown method: " + err.Error())
	err = client.Call("Nope.Add", &Args{}, &reply)
	if _, isServer := err.(rpc.ServerError); !isServer || !strings.HasPrefix(err.Error(), "rpc: can't find service Nope.Add") {
		fail("unknown service: %T %v", err, err)
	}
	fmt.Println("unknown service: " + err.Error())
	// The connection still works after errors.
	if err := client.Call("ServiceA.Add", &Args{1, 1}, &reply); err != nil || reply != 2 {
		fail("after errors: %d, %v", reply, err)
	}
	ok("errors")

	// A call with a deadline of our own, as Go programs do it.
	call := client.Go("ServiceA.Add", &Args{2, 2}, &reply, nil)
	select {
	case <-call.Done:
		if call.Error != nil || reply != 4 {
			fail("timed call: %d, %v", reply, call.Error)
		}
	case <-time.After(10 * time.Second):
		fail("timed call did not finish in 10 s")
	}
	ok("done")
}
