// A Sluice plugin in Go: requires a header, counts the calls per value of that header
// in kv, and reports the count on the response (`x-calls`).
//
// The plugin logic is this file; `sluice/` is the binding of the world in wit/ (the
// exports, the imports, the memory the gateway writes into). See README.md for the
// build and its limits.
package main

import (
	"encoding/json"
	"errors"
	"strconv"

	"tally/sluice"
)

// The header counted when the config names none.
const defaultHeader = "x-team"

// The context key that carries the count from the request to the response phase.
const callsKey = "calls"

type counter struct {
	// The header whose value is counted.
	header string
}

func (t *counter) Configure(config string) error {
	var fields map[string]any
	if err := json.Unmarshal([]byte(config), &fields); err != nil || fields == nil {
		return errors.New("config must be a JSON object")
	}
	t.header = defaultHeader
	if value, ok := fields["header"]; ok {
		name, isString := value.(string)
		if !isString || name == "" {
			return errors.New("`header` must be a non-empty string")
		}
		t.header = name
	}
	return nil
}

// errorResponse is a JSON error answer: {"error":"..."}.
func errorResponse(status uint16, message string) sluice.Decision {
	body, _ := json.Marshal(map[string]string{"error": message})
	return sluice.Respond(status, [][2]string{{"content-type", "application/json"}}, body)
}

func (t *counter) OnRequest(req sluice.Request) sluice.Decision {
	value, ok := req.Header(t.header)
	if !ok || value == "" {
		return errorResponse(400, "missing "+t.header+" header")
	}
	count, err := sluice.KvIncrement("calls:"+value, 1)
	if err != nil {
		return errorResponse(503, "kv unavailable")
	}
	req.SetContext(callsKey, strconv.FormatInt(count, 10))
	return sluice.Continue()
}

func (t *counter) OnResponse(resp sluice.Response) sluice.Decision {
	if calls, ok := resp.Context(callsKey); ok {
		// A refused header is not worth failing the response for.
		_ = resp.SetHeader("x-calls", calls)
	}
	return sluice.Continue()
}

func init() {
	sluice.Register(&counter{header: defaultHeader}, sluice.PhaseRequest|sluice.PhaseResponse)
}

// A reactor's main is never called: the gateway calls the exports.
func main() {}
