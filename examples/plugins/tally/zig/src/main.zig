//! A Sluice plugin in Zig: requires a header, counts the calls per value of that
//! header in kv, and reports the count on the response (`x-calls`).
//!
//! The C bindings of `wit/` (`gen/plugin.h`, `gen/plugin.c`), generated at build
//! time by `sluice plugin bindgen --lang c`, do the canonical ABI; this file defines
//! the `exports_plugin_*` functions they call. `build.sh` translates `plugin.h` to the
//! module `plugin` (`zig translate-c`). Memory rules of those bindings:
//! - arguments an export receives (the config string, a chunk) are ours to free;
//! - strings and lists an export returns are freed by the bindings with C `free`
//!   after the call, so they come from C `malloc` (never Zig allocators or statics);
//! - strings and lists an import returns are ours to free (the `*_free` helpers);
//! - the borrowed request/response handles are dropped by the bindings.

const std = @import("std");
const c = @import("plugin");

/// A panic traps (the gateway reports the plugin's fault) instead of printing to a
/// stderr the gateway does not show: no WASI output code is linked in.
pub const panic = std.debug.no_panic;

/// Zig-side memory (config parsing, kv keys); freed by Zig.
const gpa = std.heap.c_allocator;

const default_header = "x-team";

/// The configured header name (owned by `gpa`); empty until `configure`.
var header: []u8 = &.{};

fn headerName() []const u8 {
    return if (header.len > 0) header else default_header;
}

/// A view of Zig bytes as a bindings string, for passing to an import (not owned).
fn view(bytes: []const u8) c.plugin_string_t {
    return .{ .ptr = @constCast(bytes.ptr), .len = bytes.len };
}

fn bytesOf(s: c.plugin_string_t) []const u8 {
    return if (s.len == 0) &.{} else s.ptr[0..s.len];
}

/// The error message for a bad config, or null when it is accepted (and applied).
fn configure(text: []const u8) ?[]const u8 {
    const not_object = "config must be a JSON object";
    const bad_header = "`header` must be a non-empty string";
    const parsed = std.json.parseFromSlice(std.json.Value, gpa, text, .{}) catch return not_object;
    defer parsed.deinit();
    const fields = switch (parsed.value) {
        .object => |object| object,
        else => return not_object,
    };
    var name: []const u8 = default_header;
    if (fields.get("header")) |value| switch (value) {
        .string => |s| if (s.len > 0) {
            name = s;
        } else return bad_header,
        else => return bad_header,
    };
    const copy = gpa.dupe(u8, name) catch @panic("out of memory");
    gpa.free(header);
    header = copy;
    return null;
}

export fn exports_plugin_configure(config: *c.plugin_string_t, err: *c.plugin_string_t) bool {
    defer c.plugin_string_free(config);
    const message = configure(bytesOf(config.*)) orelse return true;
    c.plugin_string_dup_n(err, message.ptr, message.len);
    return false;
}

export fn exports_plugin_info(ret: *c.plugin_plugin_info_t) void {
    ret.phases = c.SLUICE_PLUGIN_TYPES_PHASES_REQUEST | c.SLUICE_PLUGIN_TYPES_PHASES_RESPONSE;
}

/// Answers with `status`, a JSON content type and `{"error":"<message>"}`.
fn respondError(ret: *c.plugin_decision_t, status: u16, message: []const u8) void {
    // A fixed writer into malloc'd memory: escaping a byte takes at most 6. (An
    // allocating writer would link WASI file code in through its vtable.)
    const capacity = message.len * 6 + 16;
    const body: [*]u8 = @ptrCast(std.c.malloc(capacity) orelse @panic("out of memory"));
    var writer: std.Io.Writer = .fixed(body[0..capacity]);
    writer.writeAll("{\"error\":") catch unreachable;
    std.json.Stringify.encodeJsonString(message, .{}, &writer) catch unreachable;
    writer.writeAll("}") catch unreachable;

    const headers: [*c]c.plugin_tuple2_string_string_t =
        @ptrCast(@alignCast(std.c.malloc(@sizeOf(c.plugin_tuple2_string_string_t)) orelse @panic("out of memory")));
    c.plugin_string_dup(&headers[0].f0, "content-type");
    c.plugin_string_dup(&headers[0].f1, "application/json");

    ret.tag = c.SLUICE_PLUGIN_TYPES_DECISION_RESPOND;
    ret.val.respond = .{
        .status = status,
        .headers = .{ .ptr = headers, .len = 1 },
        .body = .{ .ptr = body, .len = writer.end },
    };
}

fn respondMissing(ret: *c.plugin_decision_t) void {
    const message = std.mem.concat(gpa, u8, &.{ "missing ", headerName(), " header" }) catch @panic("out of memory");
    defer gpa.free(message);
    respondError(ret, 400, message);
}

export fn exports_plugin_on_request(request: c.plugin_borrow_request_t, ret: *c.plugin_decision_t) void {
    var name = view(headerName());
    var value: c.plugin_string_t = undefined;
    if (!c.sluice_plugin_types_method_request_header(request, &name, &value)) return respondMissing(ret);
    defer c.plugin_string_free(&value);
    if (value.len == 0) return respondMissing(ret);

    const key = std.mem.concat(gpa, u8, &.{ "calls:", bytesOf(value) }) catch @panic("out of memory");
    defer gpa.free(key);
    var key_string = view(key);
    var count: i64 = undefined;
    var kv_error: c.sluice_plugin_kv_kv_error_t = undefined;
    if (!c.sluice_plugin_kv_increment(&key_string, 1, null, &count, &kv_error)) {
        c.sluice_plugin_kv_kv_error_free(&kv_error);
        return respondError(ret, 503, "kv unavailable");
    }

    var digits: [24]u8 = undefined;
    var context_key = view("calls");
    var context_value = view(std.fmt.bufPrint(&digits, "{d}", .{count}) catch unreachable);
    c.sluice_plugin_types_method_request_set_context(request, &context_key, &context_value);
    ret.tag = c.SLUICE_PLUGIN_TYPES_DECISION_CONTINUE;
}

export fn exports_plugin_on_response(response: c.plugin_borrow_response_t, ret: *c.plugin_decision_t) void {
    var key = view("calls");
    var calls: c.plugin_string_t = undefined;
    if (c.sluice_plugin_types_method_response_context(response, &key, &calls)) {
        defer c.plugin_string_free(&calls);
        var name = view("x-calls");
        var header_error: c.sluice_plugin_types_header_error_t = undefined;
        _ = c.sluice_plugin_types_method_response_set_header(response, &name, &calls, &header_error);
    }
    ret.tag = c.SLUICE_PLUGIN_TYPES_DECISION_CONTINUE;
}

export fn exports_plugin_on_response_chunk(chunk: *c.plugin_list_u8_t, last: bool, ret: *c.plugin_list_u8_t) void {
    _ = last;
    ret.* = chunk.*; // ownership passes back to the bindings, which free it
}
