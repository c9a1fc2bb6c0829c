// Package sluice is the hand-written binding of this plugin's world (wit/world.wit)
// for Go's `wasip1` port: the exports every Sluice plugin has, the few imports the
// world names, and the arena the canonical ABI allocates from. The plugin itself
// (main.go) sees only `Plugin`, `Request`, `Response`, `Decision` and `KvIncrement`.
//
// Rules the component model sets, kept here so the plugin need not know them:
//   - a borrowed request/response handle must be dropped before the export returns
//     (the gateway traps with "borrow handles still remain at the end of the call"
//     otherwise): every phase export drops its handle;
//   - what an export returns must stay readable until the next call: it is held by
//     `returned` until then;
//   - what the gateway passed in (strings in the arena) is gone after the call: the
//     wrappers copy what they keep.
package sluice

import "unsafe"

// Phases a plugin implements; the gateway calls only these.
type Phases uint8

const (
	PhaseRequest  Phases = 1 << 0
	PhaseResponse Phases = 1 << 1
)

// Plugin is what a Go plugin implements.
type Plugin interface {
	// Configure checks and keeps the route's config (JSON). An error fails the
	// config load with this message.
	Configure(config string) error
	// OnRequest runs before the upstream is called.
	OnRequest(req Request) Decision
	// OnResponse runs on the upstream's response.
	OnResponse(resp Response) Decision
}

// Decision is what a phase returns: go on, or answer the client.
type Decision struct {
	respond bool
	status  uint16
	headers [][2]string
	body    []byte
}

// Continue goes on with the next plugin, then the upstream or the client.
func Continue() Decision { return Decision{} }

// Respond answers the client with this response instead.
func Respond(status uint16, headers [][2]string, body []byte) Decision {
	return Decision{respond: true, status: status, headers: headers, body: body}
}

var (
	plugin Plugin
	phases Phases
)

// Register makes p the plugin; call it from an `init` function.
func Register(p Plugin, implemented Phases) {
	plugin, phases = p, implemented
}

// What the last export returned, kept alive (and unmoved: Go's collector does not
// move objects) until the gateway has read it.
var returned struct {
	area    [6]uint32
	headers []uint32
	strs    []string
	body    []byte
}

func addr(p unsafe.Pointer) uint32 { return uint32(uintptr(p)) }

func area() uint32 { return addr(unsafe.Pointer(&returned.area)) }

//go:wasmexport info
func info() int32 {
	return int32(phases)
}

//go:wasmexport configure
func configure(ptr, n uint32) uint32 {
	defer releaseLowered()
	returned.area = [6]uint32{}
	if err := plugin.Configure(lowered(ptr, n)); err != nil {
		msg := err.Error()
		returned.strs = []string{msg}
		returned.area[0] = 1
		returned.area[1] = addr(strPtr(msg))
		returned.area[2] = uint32(len(msg))
	}
	return area()
}

//go:wasmexport on-request
func onRequest(handle int32) uint32 {
	defer releaseLowered()
	d := plugin.OnRequest(Request{handle})
	dropRequest(handle)
	return decision(d)
}

//go:wasmexport on-response
func onResponse(handle int32) uint32 {
	defer releaseLowered()
	d := plugin.OnResponse(Response{handle})
	dropResponse(handle)
	return decision(d)
}

// The world exports the streaming phase too; this plugin does not declare it, so
// the gateway never calls it. It hands the chunk back unchanged.
//
//go:wasmexport on-response-chunk
func onResponseChunk(ptr, n uint32, last int32) uint32 {
	defer releaseLowered()
	returned.body = []byte(lowered(ptr, n))
	returned.area = [6]uint32{addr(unsafe.Pointer(unsafe.SliceData(returned.body))), n}
	return area()
}

// decision writes `d` as the canonical ABI's `decision` variant: the tag at 0, then
// `respond`'s record (status at 4, headers at 8/12, body at 16/20).
func decision(d Decision) uint32 {
	returned.area = [6]uint32{}
	returned.headers, returned.strs, returned.body = nil, nil, nil
	if !d.respond {
		return area()
	}
	pairs := make([]uint32, 0, 4*len(d.headers))
	for _, h := range d.headers {
		returned.strs = append(returned.strs, h[0], h[1])
		pairs = append(pairs, addr(strPtr(h[0])), uint32(len(h[0])), addr(strPtr(h[1])), uint32(len(h[1])))
	}
	returned.headers, returned.body = pairs, d.body
	returned.area = [6]uint32{
		1,
		uint32(d.status),
		addr(unsafe.Pointer(unsafe.SliceData(pairs))), uint32(len(d.headers)),
		addr(unsafe.Pointer(unsafe.SliceData(d.body))), uint32(len(d.body)),
	}
	return area()
}
