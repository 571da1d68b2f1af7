// A Go net/rpc server, standard library only, as Go programs have always
// served: rpc.Register, then rpc.ServeConn (gob over TCP), rpc.HandleHTTP
// (gob after CONNECT /_goRPC_) and jsonrpc.ServeConn, each on a listener
// of its own on a free loopback port. It prints "<wire> <addr>" for each,
// then "ready", and serves until killed.
package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
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

// Quotient is a struct reply, for field names both ways.
type Quotient struct{ Quo, Rem int }

type ServiceA struct{}

func (ServiceA) Add(args *Args, reply *int) error {
	*reply = args.X + args.Y
	return nil
}

func (ServiceA) Divide(args *Args, reply *Quotient) error {
	if args.Y == 0 {
		return errors.New("division by zero")
	}
	*reply = Quotient{args.X / args.Y, args.X % args.Y}
	return nil
}

// Echo returns what it was sent, and says on stderr what it saw, so a test
// can tell the decoding side from the encoding side.
func (ServiceA) Echo(value *Everything, reply *Everything) error {
	*reply = *value
	return nil
}

// Describe answers with Go's own rendering of the value it decoded.
func (ServiceA) Describe(value *Everything, reply *string) error {
	*reply = fmt.Sprintf("%+v ptr=%+v", *value, value.Ptr)
	return nil
}

func listen() net.Listener {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	return listener
}

func main() {
	if err := rpc.Register(ServiceA{}); err != nil {
		fmt.Fprintln(os.Stderr, "register:", err)
		os.Exit(1)
	}
	rpc.HandleHTTP()
	gob, web, json := listen(), listen(), listen()
	go func() {
		for {
			conn, err := gob.Accept()
			if err != nil {
				return
			}
			go rpc.ServeConn(conn)
		}
	}()
	go func() { _ = http.Serve(web, nil) }()
	go func() {
		for {
			conn, err := json.Accept()
			if err != nil {
				return
			}
			go jsonrpc.ServeConn(conn)
		}
	}()
	fmt.Println("gob", gob.Addr())
	fmt.Println("http", web.Addr())
	fmt.Println("jsonrpc", json.Addr())
	fmt.Println("ready")
	select {}
}
