"""Requires a header, counts the calls per value of that header in `kv`, and reports
the count on the response as `x-calls`.

componentize-py generates the `wit_world` package from `wit/world.wit` while it
builds; `componentize-py -d wit -w plugin bindings gen` writes it to `gen/` for an
editor to read.
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld as World
from wit_world.imports import kv
from wit_world.imports.types import (
    Decision,
    Decision_Continue,
    Decision_Respond,
    Phases,
    PluginInfo,
    Request,
    Response,
    ResponseSpec,
)

# The header used when the config names none.
DEFAULT_HEADER = "x-team"

# The context key that carries the count from the request to the response phase.
CALLS = "calls"

# The configured header. Module state, so that it does not depend on how many
# `WitWorld` objects componentize-py creates for the calls.
header = DEFAULT_HEADER


def error(status: int, message: str) -> Decision:
    """A JSON error answer: `{"error":"..."}`."""
    body = json.dumps({"error": message}, separators=(",", ":"), ensure_ascii=False)
    headers = [("content-type", "application/json")]
    return Decision_Respond(ResponseSpec(status, headers, body.encode()))


class WitWorld(World):
    """The plugin's exports."""

    def configure(self, config: str) -> None:
        global header
        try:
            fields = json.loads(config) if config.strip() else {}
        except ValueError as e:
            raise Err(f"invalid config: {e}")
        if not isinstance(fields, dict):
            raise Err("config must be a JSON object")
        value = fields.get("header", DEFAULT_HEADER)
        if not isinstance(value, str) or not value:
            raise Err("`header` must be a non-empty string")
        header = value

    def info(self) -> PluginInfo:
        return PluginInfo(Phases.REQUEST | Phases.RESPONSE)

    def on_request(self, request: Request) -> Decision:
        value = request.header(header)
        if not value:
            return error(400, f"missing {header} header")
        try:
            calls = kv.increment(f"calls:{value}", 1, None)
        except Err:
            return error(503, "kv unavailable")
        request.set_context(CALLS, str(calls))
        return Decision_Continue()

    def on_response(self, response: Response) -> Decision:
        calls = response.context(CALLS)
        if calls is not None:
            try:
                response.set_header("x-calls", calls)
            except Err:
                pass  # only for an invalid value, and a count is always valid
        return Decision_Continue()

    def on_response_chunk(self, chunk: bytes, last: bool) -> bytes:
        return chunk
