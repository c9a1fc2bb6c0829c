package sluice

// The gateway's functions this plugin calls, in the component model's canonical ABI
// for 32-bit memory: a string goes in as (pointer, length); a result comes back in a
// return area whose address is the last argument. Only what the world in wit/ imports
// is here; another import is one more declaration and one wrapper.

import (
	"strings"
	"unsafe"
)

//go:wasmimport sluice:plugin/types@0.1.2 [method]request.header
func requestHeader(handle int32, name unsafe.Pointer, nameLen uint32, ret unsafe.Pointer)

//go:wasmimport sluice:plugin/types@0.1.2 [method]request.set-context
func requestSetContext(handle int32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32)

//go:wasmimport sluice:plugin/types@0.1.2 [method]response.context
func responseContext(handle int32, key unsafe.Pointer, keyLen uint32, ret unsafe.Pointer)

//go:wasmimport sluice:plugin/types@0.1.2 [method]response.set-header
func responseSetHeader(handle int32, name unsafe.Pointer, nameLen uint32, value unsafe.Pointer, valueLen uint32, ret unsafe.Pointer)

//go:wasmimport sluice:plugin/types@0.1.2 [resource-drop]request
func dropRequest(handle int32)

//go:wasmimport sluice:plugin/types@0.1.2 [resource-drop]response
func dropResponse(handle int32)

//go:wasmimport sluice:plugin/kv@0.1.2 increment
func kvIncrement(key unsafe.Pointer, keyLen uint32, delta int64, hasTTL int32, ttlMs int64, ret unsafe.Pointer)

// A return area: 24 bytes, 8-aligned, reused by every import (calls never overlap).
var retArea [3]uint64

func retBytes() *[24]byte { return (*[24]byte)(unsafe.Pointer(&retArea)) }

func u32At(b *[24]byte, off int) uint32 {
	return uint32(b[off]) | uint32(b[off+1])<<8 | uint32(b[off+2])<<16 | uint32(b[off+3])<<24
}

func strPtr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

// lowered copies a string the gateway wrote into the arena to the Go heap. (`go vet`
// flags the uintptr-to-pointer conversion: the address comes from the gateway, in
// this module's memory, and points into the arena, which the collector never moves.)
func lowered(ptr, n uint32) string {
	if n == 0 {
		return ""
	}
	return strings.Clone(unsafe.String((*byte)(unsafe.Pointer(uintptr(ptr))), n))
}

// optionString reads an `option<string>` from the return area.
func optionString() (string, bool) {
	b := retBytes()
	if b[0] == 0 {
		return "", false
	}
	return lowered(u32At(b, 4), u32At(b, 8)), true
}

// Request is the request a phase is given, borrowed for the length of the call.
type Request struct{ handle int32 }

// Header returns the first value of a header, if the request has it.
func (r Request) Header(name string) (string, bool) {
	requestHeader(r.handle, strPtr(name), uint32(len(name)), unsafe.Pointer(&retArea))
	return optionString()
}

// SetContext stores a value for the later phases of this request (`Response.Context`).
func (r Request) SetContext(key, value string) {
	requestSetContext(r.handle, strPtr(key), uint32(len(key)), strPtr(value), uint32(len(value)))
}

// Response is the response a phase is given, borrowed for the length of the call.
type Response struct{ handle int32 }

// Context returns what an earlier phase stored with `Request.SetContext`.
func (r Response) Context(key string) (string, bool) {
	responseContext(r.handle, strPtr(key), uint32(len(key)), unsafe.Pointer(&retArea))
	return optionString()
}

// HeaderError says why the gateway refused a header edit.
type HeaderError uint8

func (e HeaderError) Error() string {
	switch e {
	case 0:
		return "invalid header name"
	case 1:
		return "invalid header value"
	default:
		return "header not allowed"
	}
}

// SetHeader replaces a header of the response.
func (r Response) SetHeader(name, value string) error {
	responseSetHeader(r.handle, strPtr(name), uint32(len(name)), strPtr(value), uint32(len(value)),
		unsafe.Pointer(&retArea))
	if b := retBytes(); b[0] != 0 {
		return HeaderError(b[1])
	}
	return nil
}

// KvError is a failed `kv` call.
type KvError struct {
	// NotANumber: `increment` on a value that is not a decimal integer; otherwise
	// the backend is unavailable and Reason says why.
	NotANumber bool
	Reason     string
}

func (e *KvError) Error() string {
	if e.NotANumber {
		return "kv: not a number"
	}
	return "kv unavailable: " + e.Reason
}

// KvIncrement atomically adds delta to the integer at key (absent counts as 0) and
// returns the new value. The key never expires.
func KvIncrement(key string, delta int64) (int64, error) {
	kvIncrement(strPtr(key), uint32(len(key)), delta, 0, 0, unsafe.Pointer(&retArea))
	b := retBytes()
	if b[0] == 0 {
		return int64(retArea[1]), nil
	}
	if b[8] == 1 {
		return 0, &KvError{NotANumber: true}
	}
	return 0, &KvError{Reason: lowered(u32At(b, 12), u32At(b, 16))}
}
