// Command gob_roundtrip checks courier's gob codec against Go's own
// encoding/gob and net/rpc (standard library only). tests/gob_codec.rs
// runs it in one of four modes:
//
//	gob_roundtrip check <in>            decode the shared fixtures from the gob
//	                                    stream in <in> (written by courier) and
//	                                    compare each with Go's value
//	gob_roundtrip emit <out>            write the shared fixtures, then the
//	                                    Go-only ones, as one gob stream to <out>
//	gob_roundtrip client <in> <out>     a net/rpc client makes two calls over a
//	                                    loopback connection whose server side
//	                                    replays the responses in <in>; what the
//	                                    client sent goes to <out>
//	gob_roundtrip serve <in> <out>      rpc.ServeConn serves Arith to a peer that
//	                                    sends the requests in <in>; what the
//	                                    server answered goes to <out>
//
// Every mode prints one line per item on stdout ("ok <name>" or
// "FAIL <name>: ...") and exits 1 if any item failed.
package main

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"reflect"
	"sync"
	"time"
)

// The classic net/rpc example.
type Args struct{ A, B int }

// Arith is served in "serve" mode.
type Arith int

func (t *Arith) Multiply(args *Args, reply *int) error {
	*reply = args.A * args.B
	return nil
}

func (t *Arith) Divide(args *Args, reply *int) error {
	if args.B == 0 {
		return errors.New("divide by zero")
	}
	*reply = args.A / args.B
	return nil
}

// net/rpc's own headers (server.go), declared again to decode them alone.
type Request struct {
	ServiceMethod string
	Seq           uint64
}

type Response struct {
	ServiceMethod string
	Seq           uint64
	Error         string
}

type Inner struct {
	Label string
	Count int
}

// Every basic type, nesting, pointers, slices, maps, an array, Go field
// names that courier's snake_case names map to, a field courier lacks
// and an unexported one.
type Everything struct {
	Bool     bool
	I8       int8
	I16      int16
	I32      int32
	I64      int64
	I        int
	U8       uint8
	U16      uint16
	U32      uint32
	U64      uint64
	U        uint
	Ptr      uintptr
	F32      float32
	F64      float64
	C64      complex64
	C128     complex128
	S        string
	Bs       []byte
	Nested   Inner
	PInner   *Inner
	PInt     *int
	Nil      *Inner
	List     []Inner
	Strings  []string
	Scores   map[string]int
	ByID     map[int]Inner
	Grid     [3]int
	UserID   uint64
	UserName string
	Color    string
	GoOnly   string
	hidden   int
}

type Item struct {
	Name  string
	Tags  []string
	Score *float64
}

type Node struct {
	Value int
	Next  *Node
}

type WithAny struct {
	Name  string
	Value interface{}
}

type Stamp struct {
	When time.Time
	N    int
}

type fixture struct {
	name  string
	value interface{}        // what the stream carries
	fresh func() interface{} // a pointer to decode into
}

func intPtr(v int) *int           { return &v }
func floatPtr(v float64) *float64 { return &v }

func shared() []fixture {
	everything := Everything{
		Bool: true, I8: -8, I16: -16, I32: -32, I64: -1 << 63, I: -1,
		U8: 8, U16: 16, U32: 32, U64: 1<<64 - 1, U: 7, Ptr: 0xdead,
		F32: 1.5, F64: -2.25, C64: complex(1.5, -0.5), C128: complex(-3, 4.25),
		S: "héllo", Bs: []byte{0, 1, 255},
		Nested:  Inner{Label: "in", Count: 3},
		PInner:  &Inner{Count: 4},
		PInt:    intPtr(5),
		List:    []Inner{{Label: "a"}, {Count: 2}, {}},
		Strings: []string{"x", ""},
		Scores:  map[string]int{"a": 1, "zero": 0},
		ByID:    map[int]Inner{-1: {Label: "neg"}, 1: {}},
		Grid:    [3]int{1, 0, 3},
		UserID:  42, UserName: "ada", Color: "Green",
	}
	return []fixture{
		{"args", Args{A: 7, B: 8}, func() interface{} { return new(Args) }},
		{"reply", 56, func() interface{} { return new(int) }},
		{"request", Request{ServiceMethod: "Arith.Multiply", Seq: 1}, func() interface{} { return new(Request) }},
		{"response", Response{ServiceMethod: "Arith.Multiply", Seq: 1}, func() interface{} { return new(Response) }},
		{"error-response", Response{ServiceMethod: "Arith.Divide", Seq: 2, Error: "divide by zero"},
			func() interface{} { return new(Response) }},
		{"everything", everything, func() interface{} { return new(Everything) }},
		// All zero but the enum-like string courier always sends.
		{"zero", Everything{Color: "Red"}, func() interface{} { return new(Everything) }},
		{"items", []Item{{Name: "a"}, {Tags: []string{"x"}, Score: floatPtr(0.5)}},
			func() interface{} { return new([]Item) }},
		{"args-again", Args{A: 1, B: 2}, func() interface{} { return new(Args) }},
		{"list", Node{Value: 1, Next: &Node{Value: 2, Next: &Node{Value: 3}}}, func() interface{} { return new(Node) }},
		// Go decodes an empty slice into a nil one (and sends both alike).
		{"empty", []int(nil), func() interface{} { return new([]int) }},
		{"map", map[string]int{"a": 1, "b": 2}, func() interface{} { return new(map[string]int) }},
		{"bytes", []byte("raw"), func() interface{} { return new([]byte) }},
		{"floats", [2]float64{0.25, -1}, func() interface{} { return new([2]float64) }},
	}
}

// Values courier decodes but cannot send: interface values, GobEncoders.
func goOnly() []fixture {
	return []fixture{
		{"any-struct", WithAny{Name: "s", Value: Inner{Label: "dyn", Count: 9}}, nil},
		{"any-ints", WithAny{Name: "i", Value: []int{4, 5}}, nil},
		{"any-nil", WithAny{Name: "nil"}, nil},
		{"stamp", Stamp{When: time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC), N: 1}, nil},
	}
}

var failed bool

func fail(format string, args ...interface{}) {
	failed = true
	fmt.Printf("FAIL "+format+"\n", args...)
}

func check(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("read: %v", err)
		return
	}
	dec := gob.NewDecoder(bytes.NewReader(data))
	for _, f := range shared() {
		got := f.fresh()
		if err := dec.Decode(got); err != nil {
			fail("%s: %v", f.name, err)
			return
		}
		value := reflect.ValueOf(got).Elem().Interface()
		if !reflect.DeepEqual(value, f.value) {
			fail("%s: got %#v want %#v", f.name, value, f.value)
			continue
		}
		fmt.Printf("ok %s\n", f.name)
	}
	var extra interface{}
	if err := dec.Decode(&extra); err != io.EOF {
		fail("trailing: the stream goes on after the fixtures: %v", err)
	}
}

func emit(path string) {
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	for _, f := range append(shared(), goOnly()...) {
		if err := enc.Encode(f.value); err != nil {
			fail("%s: %v", f.name, err)
			return
		}
		fmt.Printf("ok %s\n", f.name)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		fail("write: %v", err)
	}
}

// loopback returns both ends of a TCP connection on 127.0.0.1.
func loopback() (*net.TCPConn, *net.TCPConn, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer listener.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, _ := listener.Accept()
		accepted <- conn
	}()
	dialed, err := net.Dial("tcp", listener.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	other := <-accepted
	if other == nil {
		return nil, nil, errors.New("accept failed")
	}
	return dialed.(*net.TCPConn), other.(*net.TCPConn), nil
}

// client: a real net/rpc client whose server is a replay of <in>.
func client(in, out string) {
	responses, err := os.ReadFile(in)
	if err != nil {
		fail("read: %v", err)
		return
	}
	clientSide, serverSide, err := loopback()
	if err != nil {
		fail("loopback: %v", err)
		return
	}
	var sent bytes.Buffer
	var reading sync.WaitGroup
	reading.Add(1)
	go func() {
		defer reading.Done()
		io.Copy(&sent, serverSide)
	}()
	c := rpc.NewClient(clientSide)
	// Both calls are pending before any response arrives.
	var product, quotient int
	multiply := c.Go("Arith.Multiply", &Args{A: 7, B: 8}, &product, nil)
	divide := c.Go("Arith.Divide", &Args{A: 1, B: 0}, &quotient, nil)
	if _, err := serverSide.Write(responses); err != nil {
		fail("replay: %v", err)
	}
	select {
	case <-multiply.Done:
	case <-time.After(10 * time.Second):
		fail("multiply: no reply")
		return
	}
	select {
	case <-divide.Done:
	case <-time.After(10 * time.Second):
		fail("divide: no reply")
		return
	}
	if multiply.Error != nil || product != 56 {
		fail("multiply: %d, %v", product, multiply.Error)
	} else {
		fmt.Println("ok multiply")
	}
	if divide.Error == nil || divide.Error.Error() != "divide by zero" {
		fail("divide: %v", divide.Error)
	} else {
		fmt.Println("ok divide")
	}
	// Closing the client ends its side: the copy above reads to the end.
	c.Close()
	reading.Wait()
	serverSide.Close()
	if err := os.WriteFile(out, sent.Bytes(), 0o644); err != nil {
		fail("write: %v", err)
	}
}

// serve: rpc.ServeConn answers the requests in <in>.
func serve(in, out string) {
	requests, err := os.ReadFile(in)
	if err != nil {
		fail("read: %v", err)
		return
	}
	server := rpc.NewServer()
	if err := server.Register(new(Arith)); err != nil {
		fail("register: %v", err)
		return
	}
	peer, serverSide, err := loopback()
	if err != nil {
		fail("loopback: %v", err)
		return
	}
	done := make(chan struct{})
	go func() {
		server.ServeConn(serverSide)
		close(done)
	}()
	if _, err := peer.Write(requests); err != nil {
		fail("send: %v", err)
	}
	// End of requests: the server answers what it read, then closes.
	peer.CloseWrite()
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	answers, err := io.ReadAll(peer)
	if err != nil {
		fail("read answers: %v", err)
	}
	<-done
	if err := os.WriteFile(out, answers, 0o644); err != nil {
		fail("write: %v", err)
	}
	fmt.Println("ok served")
}

func main() {
	gob.Register(Inner{})
	gob.Register([]int{})
	switch {
	case len(os.Args) == 3 && os.Args[1] == "check":
		check(os.Args[2])
	case len(os.Args) == 3 && os.Args[1] == "emit":
		emit(os.Args[2])
	case len(os.Args) == 4 && os.Args[1] == "client":
		client(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "serve":
		serve(os.Args[2], os.Args[3])
	default:
		fmt.Fprintln(os.Stderr, "usage: gob_roundtrip check|emit <file> | client|serve <in> <out>")
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
