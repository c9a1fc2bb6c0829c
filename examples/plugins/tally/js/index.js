// Requires a header, counts the calls per value of that header in `kv`, and reports
// the count on the response as `x-calls`.
//
// The exports of the `plugin` world (wit/world.wit) are this module's exported
// functions, in camelCase. A `result` export returns its ok value and throws its err
// value (a plain string, not an Error: an Error would trap); an import's error is
// thrown. `s64` is a BigInt, `list<u8>` a Uint8Array.

import { increment } from "sluice:plugin/kv@0.1.2";

// The header used when the config names none.
const DEFAULT_HEADER = "x-team";

// The context key that carries the count from the request to the response phase.
const CALLS = "calls";

let header = DEFAULT_HEADER;

const encoder = new TextEncoder();

// A JSON error answer: {"error":"..."}.
function error(status, message) {
  return {
    tag: "respond",
    val: {
      status,
      headers: [["content-type", "application/json"]],
      body: encoder.encode(JSON.stringify({ error: message })),
    },
  };
}

export function configure(config) {
  let fields;
  try {
    fields = config.trim() === "" ? {} : JSON.parse(config);
  } catch (e) {
    throw `invalid config: ${e.message}`;
  }
  if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
    throw "config must be a JSON object";
  }
  const value = Object.hasOwn(fields, "header") ? fields.header : DEFAULT_HEADER;
  if (typeof value !== "string" || value === "") {
    throw "`header` must be a non-empty string";
  }
  header = value;
}

export function info() {
  return { phases: { request: true, response: true } };
}

export function onRequest(request) {
  const value = request.header(header);
  if (!value) {
    return error(400, `missing ${header} header`);
  }
  let calls;
  try {
    calls = increment(`calls:${value}`, 1n, undefined);
  } catch {
    return error(503, "kv unavailable");
  }
  request.setContext(CALLS, calls.toString());
  return { tag: "continue" };
}

export function onResponse(response) {
  const calls = response.context(CALLS);
  if (calls !== undefined) {
    try {
      response.setHeader("x-calls", calls);
    } catch {
      // Only for an invalid value, and a count is always valid.
    }
  }
  return { tag: "continue" };
}

export function onResponseChunk(chunk, last) {
  return chunk;
}
