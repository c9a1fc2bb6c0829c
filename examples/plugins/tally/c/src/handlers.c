// A Sluice plugin in C: requires a header, counts the calls per value of that header
// in kv, and reports the count on the response (`x-calls`).
//
// `plugin.h` is generated at build time (`sluice plugin bindgen --lang c`). Memory
// rules of the generated bindings (the component model's canonical ABI):
// - arguments an export receives (the config string, a chunk) are ours to free;
// - strings and lists an export returns are freed by the bindings after the call,
//   so they must come from malloc (`plugin_string_dup`), never be static;
// - strings and lists an import returns are ours to free (the `*_free` helpers);
// - the borrowed request/response handles are dropped by the bindings.

#include <stdlib.h>
#include <string.h>

#include "plugin.h"

#define DEFAULT_HEADER "x-team"

// The configured header name (owned, not NUL-terminated).
static plugin_string_t header = {NULL, 0};

// ---------------------------------------------------------------------------------
// A small JSON reader: enough to validate a document and pull one string field out
// of the top-level object. Whitespace is skipped anywhere JSON allows it.

typedef struct {
    const uint8_t *at;
    const uint8_t *end;
    int depth;
} reader_t;

#define MAX_DEPTH 128

static void skip_ws(reader_t *r) {
    while (r->at < r->end && (*r->at == ' ' || *r->at == '\t' || *r->at == '\n' || *r->at == '\r')) {
        r->at++;
    }
}

static bool eat(reader_t *r, char c) {
    skip_ws(r);
    if (r->at < r->end && *r->at == (uint8_t)c) {
        r->at++;
        return true;
    }
    return false;
}

static bool eat_word(reader_t *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->at) < n || memcmp(r->at, word, n) != 0) return false;
    r->at += n;
    return true;
}

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(reader_t *r, uint32_t *out) {
    if (r->end - r->at < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(r->at[i]);
        if (d < 0) return false;
        v = (v << 4) | (uint32_t)d;
    }
    r->at += 4;
    *out = v;
    return true;
}

// Appends the UTF-8 encoding of `cp` to `out` (which has room for 4 more bytes).
static size_t put_utf8(uint8_t *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

// Reads a string (the opening quote included). With `out`, stores its decoded
// bytes in a malloc'd buffer (the caller frees `out->ptr`); without, only checks it.
static bool read_string(reader_t *r, plugin_string_t *out) {
    if (!eat(r, '"')) return false;
    // Decoded text is never longer than its escaped form.
    uint8_t *buf = NULL;
    size_t len = 0;
    if (out) {
        buf = malloc((size_t)(r->end - r->at) + 1);
        if (!buf) abort();
    }
    while (r->at < r->end) {
        uint8_t c = *r->at++;
        if (c == '"') {
            if (out) {
                out->ptr = buf;
                out->len = len;
            }
            return true;
        }
        if (c < 0x20) break;  // control characters must be escaped
        if (c != '\\') {
            if (buf) buf[len] = c;
            len++;
            continue;
        }
        if (r->at == r->end) break;
        uint8_t e = *r->at++;
        uint8_t one = 0;
        switch (e) {
            case '"': one = '"'; break;
            case '\\': one = '\\'; break;
            case '/': one = '/'; break;
            case 'b': one = '\b'; break;
            case 'f': one = '\f'; break;
            case 'n': one = '\n'; break;
            case 'r': one = '\r'; break;
            case 't': one = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (!read_hex4(r, &cp)) goto bad;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    // A high surrogate must be followed by an escaped low one.
                    uint32_t low;
                    if (r->end - r->at < 2 || r->at[0] != '\\' || r->at[1] != 'u') goto bad;
                    r->at += 2;
                    if (!read_hex4(r, &low) || low < 0xDC00 || low > 0xDFFF) goto bad;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    goto bad;
                }
                uint8_t tmp[4];
                size_t n = put_utf8(tmp, cp);
                if (buf) memcpy(buf + len, tmp, n);
                len += n;
                continue;
            }
            default: goto bad;
        }
        if (buf) buf[len] = one;
        len++;
    }
bad:
    free(buf);
    return false;
}

static bool skip_value(reader_t *r);

static bool skip_number(reader_t *r) {
    const uint8_t *start = r->at;
    if (r->at < r->end && *r->at == '-') r->at++;
    if (r->at < r->end && *r->at == '0') {
        r->at++;
    } else {
        if (r->at == r->end || *r->at < '1' || *r->at > '9') return false;
        while (r->at < r->end && *r->at >= '0' && *r->at <= '9') r->at++;
    }
    if (r->at < r->end && *r->at == '.') {
        r->at++;
        if (r->at == r->end || *r->at < '0' || *r->at > '9') return false;
        while (r->at < r->end && *r->at >= '0' && *r->at <= '9') r->at++;
    }
    if (r->at < r->end && (*r->at == 'e' || *r->at == 'E')) {
        r->at++;
        if (r->at < r->end && (*r->at == '+' || *r->at == '-')) r->at++;
        if (r->at == r->end || *r->at < '0' || *r->at > '9') return false;
        while (r->at < r->end && *r->at >= '0' && *r->at <= '9') r->at++;
    }
    return r->at > start;
}

// Checks the members of an object or the items of an array after its opening bracket.
static bool skip_container(reader_t *r, char close, bool object) {
    if (++r->depth > MAX_DEPTH) return false;
    if (!eat(r, close)) {
        do {
            if (object && (!read_string(r, NULL) || !eat(r, ':'))) return false;
            if (!skip_value(r)) return false;
        } while (eat(r, ','));
        if (!eat(r, close)) return false;
    }
    r->depth--;
    return true;
}

static bool skip_value(reader_t *r) {
    skip_ws(r);
    if (r->at == r->end) return false;
    switch (*r->at) {
        case '"': return read_string(r, NULL);
        case '{': r->at++; return skip_container(r, '}', true);
        case '[': r->at++; return skip_container(r, ']', false);
        case 't': return eat_word(r, "true");
        case 'f': return eat_word(r, "false");
        case 'n': return eat_word(r, "null");
        default: return skip_number(r);
    }
}

static bool fail(plugin_string_t *err, const char *message) {
    plugin_string_dup(err, message);
    return false;
}

bool exports_plugin_configure(plugin_string_t *config, plugin_string_t *err) {
    reader_t r = {config->ptr, config->ptr + config->len, 0};
    plugin_string_t found = {NULL, 0};
    bool has_header = false, header_ok = false, ok = false;
    const char *message = "config must be a JSON object";

    if (!eat(&r, '{')) goto done;
    if (!eat(&r, '}')) {
        do {
            plugin_string_t key;
            if (!read_string(&r, &key)) goto done;
            bool is_header = key.len == 6 && memcmp(key.ptr, "header", 6) == 0;
            free(key.ptr);
            if (!eat(&r, ':')) goto done;
            skip_ws(&r);
            if (!is_header) {
                if (!skip_value(&r)) goto done;
                continue;
            }
            // A repeated field: the last one counts.
            free(found.ptr);
            found = (plugin_string_t){NULL, 0};
            has_header = true;
            if (r.at < r.end && *r.at == '"') {
                if (!read_string(&r, &found)) goto done;
                header_ok = found.len > 0;
            } else {
                if (!skip_value(&r)) goto done;
                header_ok = false;
            }
        } while (eat(&r, ','));
        if (!eat(&r, '}')) goto done;
    }
    skip_ws(&r);
    if (r.at != r.end) goto done;  // trailing garbage
    if (has_header && !header_ok) {
        message = "`header` must be a non-empty string";
        goto done;
    }
    ok = true;

done:
    plugin_string_free(config);
    if (!ok) {
        free(found.ptr);
        return fail(err, message);
    }
    free(header.ptr);
    if (has_header) {
        header = found;
    } else {
        plugin_string_dup(&header, DEFAULT_HEADER);
    }
    return true;
}

void exports_plugin_info(plugin_plugin_info_t *ret) {
    ret->phases = SLUICE_PLUGIN_TYPES_PHASES_REQUEST | SLUICE_PLUGIN_TYPES_PHASES_RESPONSE;
}

// ---------------------------------------------------------------------------------
// The phases.

// The configured header, or the default when `configure` was not called.
static plugin_string_t header_name(void) {
    plugin_string_t name;
    if (header.len > 0) return header;
    plugin_string_set(&name, DEFAULT_HEADER);
    return name;
}

// Writes `n` in decimal to `out` (room for 20 bytes); returns the length. (Hand-made:
// printf would bring tens of kilobytes of formatting code into the component.)
static size_t format_decimal(char *out, int64_t n) {
    char digits[20];
    size_t len = 0, i = 0;
    uint64_t v = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    do {
        digits[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    if (n < 0) out[len++] = '-';
    while (i > 0) out[len++] = digits[--i];
    return len;
}

static size_t append(char *out, size_t len, const char *text) {
    size_t n = strlen(text);
    memcpy(out + len, text, n);
    return len + n;
}

// Fills `ret` with a JSON error response: {"error":"<text><name><suffix>"}, `name`
// escaped as a JSON string.
static void respond_error(plugin_decision_t *ret, uint16_t status, const char *text, const plugin_string_t *name,
                          const char *suffix) {
    static const char hex[] = "0123456789abcdef";
    char *body = malloc(16 + strlen(text) + strlen(suffix) + (name ? name->len * 6 : 0));
    if (!body) abort();
    size_t len = append(body, 0, "{\"error\":\"");
    len = append(body, len, text);
    for (size_t i = 0; name && i < name->len; i++) {
        uint8_t c = name->ptr[i];
        if (c == '"' || c == '\\') {
            body[len++] = '\\';
            body[len++] = (char)c;
        } else if (c < 0x20) {
            len = append(body, len, "\\u00");
            body[len++] = hex[c >> 4];
            body[len++] = hex[c & 0xF];
        } else {
            body[len++] = (char)c;
        }
    }
    len = append(body, len, suffix);
    len = append(body, len, "\"}");

    plugin_tuple2_string_string_t *headers = malloc(sizeof *headers);
    if (!headers) abort();
    plugin_string_dup(&headers[0].f0, "content-type");
    plugin_string_dup(&headers[0].f1, "application/json");

    ret->tag = SLUICE_PLUGIN_TYPES_DECISION_RESPOND;
    ret->val.respond.status = status;
    ret->val.respond.headers = (plugin_list_tuple2_string_string_t){headers, 1};
    ret->val.respond.body = (plugin_list_u8_t){(uint8_t *)body, len};
}

void exports_plugin_on_request(plugin_borrow_request_t request, plugin_decision_t *ret) {
    plugin_string_t name = header_name();
    plugin_string_t value;
    if (!sluice_plugin_types_method_request_header(request, &name, &value)) {
        respond_error(ret, 400, "missing ", &name, " header");
        return;
    }
    if (value.len == 0) {
        plugin_string_free(&value);
        respond_error(ret, 400, "missing ", &name, " header");
        return;
    }

    plugin_string_t key;
    key.len = 6 + value.len;
    key.ptr = malloc(key.len);
    if (!key.ptr) abort();
    memcpy(key.ptr, "calls:", 6);
    memcpy(key.ptr + 6, value.ptr, value.len);
    plugin_string_free(&value);

    int64_t count;
    sluice_plugin_kv_kv_error_t kv_err;
    bool ok = sluice_plugin_kv_increment(&key, 1, NULL, &count, &kv_err);
    plugin_string_free(&key);
    if (!ok) {
        sluice_plugin_kv_kv_error_free(&kv_err);
        respond_error(ret, 503, "kv unavailable", NULL, "");
        return;
    }

    char digits[20];
    plugin_string_t context_key, context_value;
    plugin_string_set(&context_key, "calls");
    context_value = (plugin_string_t){(uint8_t *)digits, format_decimal(digits, count)};
    sluice_plugin_types_method_request_set_context(request, &context_key, &context_value);
    ret->tag = SLUICE_PLUGIN_TYPES_DECISION_CONTINUE;
}

void exports_plugin_on_response(plugin_borrow_response_t response, plugin_decision_t *ret) {
    plugin_string_t key, calls;
    plugin_string_set(&key, "calls");
    if (sluice_plugin_types_method_response_context(response, &key, &calls)) {
        plugin_string_t name;
        sluice_plugin_types_header_error_t header_err;
        plugin_string_set(&name, "x-calls");
        (void)sluice_plugin_types_method_response_set_header(response, &name, &calls, &header_err);
        plugin_string_free(&calls);
    }
    ret->tag = SLUICE_PLUGIN_TYPES_DECISION_CONTINUE;
}

void exports_plugin_on_response_chunk(plugin_list_u8_t *chunk, bool last, plugin_list_u8_t *ret) {
    (void)last;
    *ret = *chunk;  // ownership passes back to the bindings, which free it
}
