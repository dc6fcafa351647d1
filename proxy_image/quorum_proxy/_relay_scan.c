/* The JSON-RPC relay's hot scans in C (jsonrpc_relay.py, jsonrpc.py): a strict subset.

Each function answers for the common case only and says "not known" otherwise, and the
caller then decides as it did without this module (llhttp, orjson, the full checks). What
these accept is narrower than what those accept, never wider: only token header names,
printable ASCII values, origin-form targets of RFC 3986 characters, ASCII JSON strings, no
duplicate keys. So a request or an answer is only ever taken here where the Python path takes
it the same way; the tests hold both to that (tests/proxy_image/test_proxy_relay_scan.py).
Built by proxy_image/build_relay_scan.py; without it the Python path runs alone.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <structmember.h>

typedef const unsigned char *ptr;

/* Character classes, one table lookup per byte (filled once, by fill_classes) */
enum {
    TCHAR = 1,      /* RFC 9110 5.6.2 tchar */
    TARGET = 2,     /* an origin-form target's: RFC 3986 unreserved, sub-delims, ':', '@', '/',
                       '?' and '%' (no fragment, nothing llhttp's strict mode might refuse) */
    FIELD = 4,      /* a header value's: printable ASCII and tab */
    JSON_PLAIN = 8, /* a JSON string's, as it stands: ASCII from 0x20 but '"' and '\\' */
};
static unsigned char classes[256];

static void fill_classes(void) {
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        unsigned char k = 0;
        if (alnum || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL)) k |= TCHAR;
        if (alnum || (c != 0 && strchr("-._~!$&'()*+,;=:@/?%", c) != NULL)) k |= TARGET;
        if ((c >= 0x20 && c < 0x7f) || c == '\t') k |= FIELD;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') k |= JSON_PLAIN;
        classes[c] = k;
    }
}

static int name_is(ptr name, Py_ssize_t n, const char *lower) {
    Py_ssize_t len = (Py_ssize_t)strlen(lower);
    if (n != len) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = name[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != (unsigned char)lower[i]) return 0;
    }
    return 1;
}

/* What the header lines from p say; 0 when they are outside the subset. */
typedef struct {
    Py_ssize_t head;           /* bytes up to and with the blank line */
    long long content_length;  /* -1: none */
    int hosts;
    Py_ssize_t lines;          /* header lines */
} Head;

static int scan_fields(ptr start, ptr p, ptr end, Head *h) {
    h->content_length = -1;
    h->hosts = 0;
    h->lines = 0;
    for (;;) {
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            h->head = (p + 2) - start;
            return 1;
        }
        ptr name = p;
        while (p < end && (classes[*p] & TCHAR)) p++;
        Py_ssize_t name_len = p - name;
        if (name_len == 0 || p >= end || *p != ':') return 0;
        p++;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        ptr value = p;
        while (p < end && (classes[*p] & FIELD)) p++;
        ptr value_end = p;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) value_end--;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
        p += 2;
        h->lines++;
        Py_ssize_t value_len = value_end - value;
        switch (name[0] | 0x20) {
        case 'h':
            if (name_is(name, name_len, "host")) h->hosts++;
            break;
        case 'c':
            if (name_is(name, name_len, "content-length")) {
                if (h->content_length >= 0 || value_len == 0 || value_len > 15) return 0;
                long long n = 0;
                for (Py_ssize_t i = 0; i < value_len; i++) {
                    if (value[i] < '0' || value[i] > '9') return 0;
                    n = n * 10 + (value[i] - '0');
                }
                h->content_length = n;
            } else if (name_is(name, name_len, "connection")) {
                /* keep-alive is what HTTP/1.1 means without it; anything else is llhttp's */
                if (!name_is(value, value_len, "keep-alive")) return 0;
            }
            break;
        case 't':
            if (name_is(name, name_len, "transfer-encoding")) return 0;
            break;
        case 'e':
            if (name_is(name, name_len, "expect")) return 0;
            break;
        case 'u':
            if (name_is(name, name_len, "upgrade")) return 0;
            break;
        case 'p':
            if (name_is(name, name_len, "proxy-connection")) return 0;
            break;
        }
    }
}

/* a limit; one past what a Py_ssize_t holds (the config bounds limits from below only) is
   as good as none: clipped, not an error */
static int to_ssize(PyObject *o, Py_ssize_t *out) {
    *out = PyNumber_AsSsize_t(o, NULL);
    return !(*out == -1 && PyErr_Occurred());
}

/* the head's size when start..size is one plain request, else -1 */
static Py_ssize_t scan_request(ptr start, Py_ssize_t size, Py_ssize_t max_header,
                               Py_ssize_t max_uri, Py_ssize_t max_body) {
    ptr end = start + size, p = start;
    if (size < 6 || memcmp(p, "POST /", 6) != 0) return -1;
    p += 5;
    ptr target = p;
    while (p < end && (classes[*p] & TARGET)) p++;
    if (p - target > max_uri || end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0) return -1;
    Head h;
    /* the engine counts a header as its name, its value and 4 bytes, one more than `a:b`
       takes: a head within max_header_bytes counted so is within it as the engine reads it
       again after a failure */
    if (!scan_fields(start, p + 11, end, &h) || h.hosts != 1 || h.content_length < 0 ||
        h.head + h.lines > max_header || h.content_length > max_body ||
        h.head + h.content_length != size)
        return -1;
    return h.head;
}

/* plain_request(data, max_header_bytes, max_uri_bytes, max_body_bytes) -> head size or -1 */
static PyObject *plain_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t max_header, max_uri, max_body;
    if (nargs != 4 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "plain_request(bytes, int, int, int)");
        return NULL;
    }
    if (!to_ssize(args[1], &max_header) || !to_ssize(args[2], &max_uri) ||
        !to_ssize(args[3], &max_body))
        return NULL;
    return PyLong_FromSsize_t(scan_request((ptr)PyBytes_AS_STRING(args[0]),
                                           PyBytes_GET_SIZE(args[0]), max_header, max_uri,
                                           max_body));
}

/* plain_answer(data) -> status, or 0: data is not one whole final answer of the subset
   (HTTP/1.1, framed by Content-Length, kept alive, a status with a body: not 1xx, 204, 304) */
static long scan_answer(ptr start, Py_ssize_t size) {
    ptr end = start + size, p = start;
    if (size < 13 || memcmp(p, "HTTP/1.1 ", 9) != 0) return 0;
    p += 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
        p[3] != ' ')
        return 0;
    long status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (status == 204 || status == 304) return 0;
    p += 4;
    while (p < end && (classes[*p] & FIELD)) p++;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
    Head h;
    if (!scan_fields(start, p + 2, end, &h) || h.content_length < 0 ||
        h.head + h.content_length != size)
        return 0;
    return status;
}

static PyObject *plain_answer(PyObject *self, PyObject *data) {
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "plain_answer(bytes)");
        return NULL;
    }
    return PyLong_FromLong(scan_answer((ptr)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)));
}

/* --- one JSON-RPC call: strict RFC 8259, ASCII strings, no lone surrogates --- */

typedef struct {
    ptr p, end;
    int depth, max_depth;
} J;

static void ws(J *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex4(ptr p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* at '"': the string's raw bytes (between the quotes) and whether it has escapes */
static int string(J *j, ptr *s, Py_ssize_t *n, int *escaped) {
    ptr p = j->p + 1;
    *escaped = 0;
    ptr begin = p;
    while (p < j->end) {
        while (p < j->end && (classes[*p] & JSON_PLAIN)) p++;
        if (p >= j->end) return 0;
        unsigned char c = *p;
        if (c == '"') {
            *s = begin;
            *n = p - begin;
            j->p = p + 1;
            return 1;
        }
        if (c == '\\') {
            *escaped = 1;
            if (++p >= j->end) return 0;
            c = *p;
            if (c == 'u') {
                unsigned code;
                if (j->end - p < 5 || !hex4(p + 1, &code)) return 0;
                if (code >= 0xD800 && code <= 0xDFFF) return 0; /* pairs left to the parsers */
                p += 5;
                continue;
            }
            if (!strchr("\"\\/bfnrt", c) || c == 0) return 0;
            p++;
            continue;
        }
        if (c < 0x20 || c >= 0x80) return 0;
        p++;
    }
    return 0;
}

static int digits(J *j) {
    ptr begin = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    return j->p > begin;
}

static int number(J *j) {
    if (*j->p == '-') j->p++;
    if (j->p >= j->end) return 0;
    if (*j->p == '0') j->p++;
    else if (!digits(j)) return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!digits(j)) return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!digits(j)) return 0;
    }
    return 1;
}

static int literal(J *j, const char *word) {
    Py_ssize_t n = (Py_ssize_t)strlen(word);
    if (j->end - j->p < n || memcmp(j->p, word, (size_t)n) != 0) return 0;
    j->p += n;
    return 1;
}

static int value(J *j);

static int members(J *j, unsigned char close) {
    /* at '[' or '{' */
    if (++j->depth > j->max_depth) return 0;
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            ptr s;
            Py_ssize_t n;
            int escaped;
            if (j->p >= j->end || *j->p != '"' || !string(j, &s, &n, &escaped)) return 0;
            ws(j);
            if (j->p >= j->end || *j->p != ':') return 0;
            j->p++;
            ws(j);
        }
        if (!value(j)) return 0;
        ws(j);
        if (j->p >= j->end) return 0;
        if (*j->p == close) {
            j->p++;
            j->depth--;
            return 1;
        }
        if (*j->p != ',') return 0;
        j->p++;
        ws(j);
    }
}

static int value(J *j) {
    if (j->p >= j->end) return 0;
    switch (*j->p) {
    case '{':
        return members(j, '}');
    case '[':
        return members(j, ']');
    case '"': {
        ptr s;
        Py_ssize_t n;
        int escaped;
        return string(j, &s, &n, &escaped);
    }
    case 't':
        return literal(j, "true");
    case 'f':
        return literal(j, "false");
    case 'n':
        return literal(j, "null");
    default:
        return (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) && number(j);
    }
}

static const char *const FIELDS[] = {"jsonrpc", "method", "params", "id"};

/* 1 with the method when p..end is one call of the subset, else 0 */
static int one_call_method_at(ptr p, ptr end, int max_depth, ptr *method_out,
                              Py_ssize_t *method_len_out) {
    J j = {p, end, 1, max_depth};
    ws(&j);
    if (j.p >= j.end || *j.p != '{') return 0;
    j.p++;
    ws(&j);
    int seen = 0;
    ptr method = NULL;
    Py_ssize_t method_len = 0;
    if (j.p < j.end && *j.p == '}') return 0; /* no method */
    for (;;) {
        ptr key;
        Py_ssize_t key_len;
        int escaped;
        if (j.p >= j.end || *j.p != '"' || !string(&j, &key, &key_len, &escaped) || escaped)
            return 0;
        int field = -1;
        for (int i = 0; i < 4; i++) {
            if ((Py_ssize_t)strlen(FIELDS[i]) == key_len &&
                memcmp(key, FIELDS[i], (size_t)key_len) == 0)
                field = i;
        }
        if (field < 0 || (seen & (1 << field))) return 0;
        seen |= 1 << field;
        ws(&j);
        if (j.p >= j.end || *j.p != ':') return 0;
        j.p++;
        ws(&j);
        if (field == 1) {
            if (j.p >= j.end || *j.p != '"' || !string(&j, &method, &method_len, &escaped) ||
                escaped)
                return 0;
        } else if (!value(&j)) {
            return 0;
        }
        ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            ws(&j);
            continue;
        }
        break;
    }
    if (j.p >= j.end || *j.p != '}' || method == NULL) return 0;
    j.p++;
    ws(&j);
    if (j.p != j.end) return 0;
    *method_out = method;
    *method_len_out = method_len;
    return 1;
}

/* one_call_method(body, max_depth) -> str or None: the method of a body that is one JSON-RPC
   call object whose keys are only jsonrpc, method, params and id, each once and spelled
   exactly so, the method a string without escapes; None: not known (the full parse decides) */
static PyObject *one_call_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t max_depth;
    if (nargs != 2 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "one_call_method(bytes, int)");
        return NULL;
    }
    if (!to_ssize(args[1], &max_depth)) return NULL;
    ptr p = (ptr)PyBytes_AS_STRING(args[0]), method;
    Py_ssize_t method_len;
    if (!one_call_method_at(p, p + PyBytes_GET_SIZE(args[0]),
                            (int)(max_depth > 1000 ? 1000 : max_depth), &method, &method_len))
        Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize((const char *)method, method_len);
}


/* --- the lane: the common call relayed without Python frames --- */

/* A client connection's data_received (jsonrpc_relay.RelayClientProtocol sets it as its
   instance's) and its relayed answers' reader (Lane.answer, its relay_answer). The common
   request, one plain POST of one call whose method is in plain_reads, is sent to a pooled
   connection of the primary as RelayClientProtocol._relay sends it, the connection's state set
   as _relay sets it; the common answer, whole in its first read, is passed on as
   _relay_answer passes it, then done by _relay_done. Writes are WriteBatch.write_now's, the
   primary's choice pick_primary's. Every other read goes to the Python path as before: the
   gate's to proto._received, a request's to proto._relay (which decides it all over again
   from the bytes), an answer's to proto._relay_read. The two paths are held to the same
   behaviour by the relay's tests, which run every case on both
   (tests/proxy_image/test_proxy_jsonrpc_relay.py). */

/* the slots read or set, found once per lane (member descriptors of __slots__) */
enum {
    P_RELAY_CONN, P_BACKLOG, P_WS_REQ, P_ACTIVE, P_PARTIAL, P_QUEUE, P_CLOSED, P_LAST_REQUEST,
    P_REQUESTS, P_RUNTIME, P_LISTENER, P_FRESH, P_WAITING_SINCE, P_CALL_VALUES, P_SAFE_KEY,
    P_RELAY_KINDS, P_RELAY_DATA, P_RELAY_START, P_RELAY_DEADLINE, P_RELAY_ANSWERING, P_CONN,
    P_RELAY_ANSWER, P_XFF_LINE, P_BATCH, P_LOOP, P_TRANSPORT, P_RELAY_HEAD, P_RELAY_STATUS,
    P_COUNT
};
static const char *const PROTO_SLOTS[P_COUNT] = {
    "relay_conn", "backlog", "ws_req", "active", "partial", "queue", "closed", "last_request",
    "requests", "runtime", "listener", "fresh", "waiting_since", "call_values", "safe_key",
    "relay_kinds", "relay_data", "relay_start", "relay_deadline", "relay_answering", "conn",
    "relay_answer", "xff_line", "batch", "loop", "transport", "relay_head", "relay_status",
};
enum { C_CLOSED, C_HANDLER, C_RAW, C_TRANSPORT, C_COUNT };
static const char *const CONN_SLOTS[C_COUNT] = {"closed", "handler", "raw", "transport"};

/* each name's slot offset in type into out, all or none */
static int find_offsets(PyTypeObject *type, const char *const *names, int n, Py_ssize_t *out) {
    Py_ssize_t found[P_COUNT];
    for (int i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttrString((PyObject *)type, names[i]);
        if (d == NULL) return 0;
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
                 !(((PyMemberDescrObject *)d)->d_member->flags & READONLY) &&
                 PyType_IsSubtype(type, PyDescr_TYPE(d));
        if (ok) found[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            return 0;
        }
    }
    memcpy(out, found, sizeof(Py_ssize_t) * (size_t)n);
    return 1;
}

/* a slot's value, borrowed; NULL (no exception) when unset */
static inline PyObject *get(PyObject *o, Py_ssize_t off) {
    return *(PyObject **)((char *)o + off);
}

/* a slot's value, a new reference; NULL with AttributeError when unset */
static PyObject *get_ref(PyObject *o, Py_ssize_t off, const char *name) {
    PyObject *v = get(o, off);
    if (v == NULL) {
        PyErr_Format(PyExc_AttributeError, "relay lane: %s is not set", name);
        return NULL;
    }
    return Py_NewRef(v);
}

/* v stolen */
static inline void put(PyObject *o, Py_ssize_t off, PyObject *v) {
    PyObject **p = (PyObject **)((char *)o + off);
    PyObject *old = *p;
    *p = v;
    Py_XDECREF(old);
}

static inline void put_borrowed(PyObject *o, Py_ssize_t off, PyObject *v) {
    put(o, off, Py_NewRef(v));
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *proto;          /* the client connection */
    PyTypeObject *proto_type; /* its class, whose slots po are */
    PyTypeObject *conn_type;  /* the pooled connections' class, whose slots co are; or NULL */
    PyObject *plain_reads;    /* jsonrpc.PLAIN_READS: methods safe whatever their params */
    PyObject *one_safe;       /* jsonrpc.ONE_SAFE */
    PyObject *hold;           /* jsonrpc_relay.HOLD_5XX: statuses a JSON-RPC request fails on */
    Py_ssize_t max_header, max_uri, max_body, keepalive_requests, counted_from, max_depth;
    Py_ssize_t po[P_COUNT], co[C_COUNT];
} Lane;

static PyObject *s_draining, *s_pick_primary, *s_idle, *s_read_timeout, *s_time, *s_write_now,
    *s_relay, *s_received, *s_relay_done, *s_relay_read, *s_relay_answer;

/* the lane's connection (a new reference), as it was made for; NULL with an error if not */
static PyObject *lane_proto(Lane *l) {
    if (l->proto == NULL || Py_TYPE(l->proto) != l->proto_type) {
        PyErr_SetString(PyExc_RuntimeError, "relay lane: no connection of its class");
        return NULL;
    }
    return Py_NewRef(l->proto);
}

/* conn's slots found (once per class) */
static int lane_conn_offsets(Lane *l, PyObject *conn) {
    if (Py_TYPE(conn) == l->conn_type) return 1;
    if (!find_offsets(Py_TYPE(conn), CONN_SLOTS, C_COUNT, l->co)) return 0;
    Py_XSETREF(l->conn_type, (PyTypeObject *)Py_NewRef(Py_TYPE(conn)));
    return 1;
}

static int truth(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* the batch's write_now (upstream.py: at once unless earlier writes wait or it closes) */
static int write_now(PyObject *batch, PyObject *transport, PyObject *data) {
    PyObject *r = PyObject_CallMethodObjArgs(batch, s_write_now, transport, data, NULL);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

enum { RELAYED = 1, NOT_TAKEN = 0, DECLINED = 2, FAILED = -1 };

/* RELAYED; NOT_TAKEN (nothing changed: _relay decides); DECLINED (after picking the primary:
   none, or no open pooled connection of it, closed ones dropped, where _relay would return
   False having done the same); FAILED (an exception) */
static int lane_relay(Lane *l, PyObject *proto, PyObject *data) {
    Py_ssize_t *po = l->po;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size >= l->counted_from) return NOT_TAKEN; /* counted in the body budget: _relay's */
    PyObject *requests = get(proto, po[P_REQUESTS]);
    if (requests == NULL || !PyLong_CheckExact(requests)) return NOT_TAKEN;
    Py_ssize_t served = PyLong_AsSsize_t(requests);
    if (served == -1 && PyErr_Occurred()) return FAILED;
    if (served + 1 >= l->keepalive_requests) return NOT_TAKEN;
    PyObject *runtime = get(proto, po[P_RUNTIME]);
    if (runtime == NULL) return NOT_TAKEN;
    int drains = truth(runtime, s_draining);
    if (drains) return drains < 0 ? FAILED : NOT_TAKEN;

    ptr start = (ptr)PyBytes_AS_STRING(data);
    Py_ssize_t head = scan_request(start, size, l->max_header, l->max_uri, l->max_body);
    if (head < 0) return NOT_TAKEN;
    ptr method;
    Py_ssize_t method_len;
    if (!one_call_method_at(start + head, start + size, (int)l->max_depth, &method, &method_len))
        return NOT_TAKEN;
    PyObject *name = PyUnicode_DecodeASCII((const char *)method, method_len, NULL);
    if (name == NULL) return FAILED;
    int plain = PySet_Contains(l->plain_reads, name);
    Py_DECREF(name);
    if (plain <= 0) return plain < 0 ? FAILED : NOT_TAKEN;

    PyObject *listener = get_ref(proto, po[P_LISTENER], "listener");
    if (listener == NULL) return FAILED;
    PyObject *server = PyObject_CallMethodNoArgs(listener, s_pick_primary);
    if (server == NULL || server == Py_None) {
        Py_DECREF(listener);
        Py_XDECREF(server);
        return server == NULL ? FAILED : DECLINED;
    }
    PyObject *idle = PyObject_GetAttr(server, s_idle);
    Py_DECREF(server);
    if (idle == NULL || !PyList_CheckExact(idle)) {
        Py_DECREF(listener);
        if (idle == NULL) return FAILED;
        Py_DECREF(idle);
        PyErr_SetString(PyExc_TypeError, "relay lane: a server's idle connections not a list");
        return FAILED;
    }
    PyObject *conn = NULL; /* owned */
    while (PyList_GET_SIZE(idle) > 0) {
        Py_ssize_t last = PyList_GET_SIZE(idle) - 1;
        PyObject *candidate = PyList_GET_ITEM(idle, last);
        if (!lane_conn_offsets(l, candidate)) goto fail; /* nothing popped */
        PyObject *closed = get(candidate, l->co[C_CLOSED]);
        int shut = closed == NULL ? -1 : PyObject_IsTrue(closed);
        if (shut < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "relay lane: closed");
            goto fail;
        }
        conn = Py_NewRef(candidate);
        if (PyList_SetSlice(idle, last, last + 1, NULL) < 0) {
            Py_CLEAR(conn);
            goto fail;
        }
        if (!shut) break;
        Py_CLEAR(conn);
    }
    if (conn == NULL) {
        Py_DECREF(idle);
        Py_DECREF(listener);
        return DECLINED;
    }
    /* what may fail, before any state is set: the clock, the timeout, the counter, the bytes */
    PyObject *loop = get_ref(proto, po[P_LOOP], "loop");
    PyObject *now = loop ? PyObject_CallMethodNoArgs(loop, s_time) : NULL;
    Py_XDECREF(loop);
    double start_time = now ? PyFloat_AsDouble(now) : -1.0;
    Py_XDECREF(now);
    if (start_time == -1.0 && PyErr_Occurred()) goto fail;
    PyObject *timeout = PyObject_GetAttr(listener, s_read_timeout);
    double read_timeout = timeout ? PyFloat_AsDouble(timeout) : -1.0;
    Py_XDECREF(timeout);
    if (read_timeout == -1.0 && PyErr_Occurred()) goto fail;
    /* from here no Python code runs until the write: the slots read are used as they are */
    PyObject *values = get(proto, po[P_CALL_VALUES]), *safe_key = get(proto, po[P_SAFE_KEY]);
    PyObject *xff = get(proto, po[P_XFF_LINE]), *answer = get(proto, po[P_RELAY_ANSWER]);
    PyObject *transport = get(conn, l->co[C_TRANSPORT]);
    if (values == NULL || !PyDict_CheckExact(values) || safe_key == NULL || xff == NULL ||
        !PyBytes_CheckExact(xff) || answer == NULL || transport == NULL || transport == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "relay lane: a connection's state is not set");
        goto fail;
    }
    PyObject *count = PyDict_GetItemWithError(values, safe_key);
    if (count == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, safe_key);
        goto fail;
    }
    double calls = PyFloat_AsDouble(count);
    if (calls == -1.0 && PyErr_Occurred()) goto fail;
    /* before the blank line that ends the head, the X-Forwarded-For line */
    Py_ssize_t cut = head - 2, xff_size = PyBytes_GET_SIZE(xff);
    PyObject *sent = PyBytes_FromStringAndSize(NULL, size + xff_size);
    PyObject *counted = PyFloat_FromDouble(calls + 1.0);
    PyObject *start_obj = PyFloat_FromDouble(start_time);
    PyObject *deadline = PyFloat_FromDouble(start_time + read_timeout);
    PyObject *next = PyLong_FromSsize_t(served + 1);
    if (sent == NULL || counted == NULL || start_obj == NULL || deadline == NULL ||
        next == NULL || PyDict_SetItem(values, safe_key, counted) < 0) {
        Py_XDECREF(sent);
        Py_XDECREF(counted);
        Py_XDECREF(start_obj);
        Py_XDECREF(deadline);
        Py_XDECREF(next);
        goto fail;
    }
    Py_DECREF(counted);
    char *out = PyBytes_AS_STRING(sent);
    memcpy(out, start, (size_t)cut);
    memcpy(out + cut, PyBytes_AS_STRING(xff), (size_t)xff_size);
    memcpy(out + cut + xff_size, start + cut, (size_t)(size - cut));
    Py_INCREF(transport);
    PyObject *batch = get_ref(proto, po[P_BATCH], "batch");
    Py_INCREF(answer);
    /* the state as _relay sets it */
    put(proto, po[P_REQUESTS], next);
    put_borrowed(proto, po[P_FRESH], Py_False);
    put_borrowed(proto, po[P_WAITING_SINCE], Py_None);
    put_borrowed(proto, po[P_RELAY_KINDS], l->one_safe);
    put_borrowed(proto, po[P_RELAY_DATA], data);
    put(proto, po[P_RELAY_START], start_obj);
    put(proto, po[P_RELAY_DEADLINE], deadline);
    put_borrowed(proto, po[P_RELAY_ANSWERING], Py_False);
    put_borrowed(proto, po[P_CONN], conn);
    put_borrowed(proto, po[P_RELAY_CONN], conn);
    put_borrowed(conn, l->co[C_HANDLER], proto);
    put(conn, l->co[C_RAW], answer);
    int written = batch == NULL ? -1 : write_now(batch, transport, sent);
    Py_XDECREF(batch);
    Py_DECREF(transport);
    Py_DECREF(sent);
    Py_DECREF(conn);
    Py_DECREF(idle);
    Py_DECREF(listener);
    return written < 0 ? FAILED : RELAYED;
fail:
    /* before any state was set: a connection taken goes back to the pool */
    if (conn != NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyList_Append(idle, conn) < 0) PyErr_Clear();
        PyErr_Restore(type, value, tb);
        Py_DECREF(conn);
    }
    Py_DECREF(idle);
    Py_DECREF(listener);
    return FAILED;
}

static PyObject *call_one(PyObject *o, PyObject *name, PyObject *arg) {
    PyObject *r = PyObject_CallMethodOneArg(o, name, arg);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *lane_call(PyObject *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames) {
    Lane *l = (Lane *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "lane(data: bytes)");
        return NULL;
    }
    PyObject *data = args[0], *proto = lane_proto(l);
    if (proto == NULL) return NULL;
    Py_ssize_t *po = l->po;
    /* RelayClientProtocol._read's gate: busy() spelled out */
    static const int gate[] = {P_BACKLOG, P_PARTIAL, P_QUEUE, P_CLOSED, P_LAST_REQUEST};
    PyObject *relay_conn = get(proto, po[P_RELAY_CONN]), *ws_req = get(proto, po[P_WS_REQ]);
    PyObject *active = get(proto, po[P_ACTIVE]);
    int busy = relay_conn == NULL || ws_req == NULL || active == NULL
                   ? -1
                   : relay_conn != Py_None || ws_req != Py_None || active != Py_None;
    for (size_t i = 0; busy == 0 && i < sizeof gate / sizeof gate[0]; i++) {
        PyObject *v = get(proto, po[gate[i]]);
        busy = v == NULL ? -1 : PyObject_IsTrue(v);
    }
    PyObject *result = NULL;
    if (busy < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_AttributeError, "relay lane: unset slot");
    } else if (busy) {
        result = call_one(proto, s_received, data);
    } else {
        int sent = lane_relay(l, proto, data);
        if (sent == RELAYED) {
            result = Py_NewRef(Py_True);
        } else if (sent == DECLINED) {
            result = call_one(proto, s_received, data);
        } else if (sent == NOT_TAKEN) {
            PyObject *relayed = PyObject_CallMethodOneArg(proto, s_relay, data);
            int done = relayed == NULL ? -1 : PyObject_IsTrue(relayed);
            Py_XDECREF(relayed);
            if (done > 0)
                result = Py_NewRef(Py_False);
            else if (done == 0)
                result = call_one(proto, s_received, data);
        }
    }
    Py_DECREF(proto);
    return result;
}

/* Lane.answer(data): a read of the relayed request's answer (the upstream connection's raw
   hook). The common answer, whole in the answer's first read, kept alive, neither held
   (HOLD_5XX) nor while draining, is passed on as _relay_answer passes it, then done by
   _relay_done; any other read is _relay_read's, as in _relay_answer. */
static PyObject *lane_answer(PyObject *self, PyObject *data) {
    Lane *l = (Lane *)self;
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "answer(data: bytes)");
        return NULL;
    }
    PyObject *proto = lane_proto(l);
    if (proto == NULL) return NULL;
    Py_ssize_t *po = l->po;
    PyObject *conn = get(proto, po[P_RELAY_CONN]), *head = get(proto, po[P_RELAY_HEAD]);
    if (conn == NULL || conn == Py_None || head == NULL) {
        PyObject *r = PyObject_CallMethodOneArg(proto, s_relay_answer, data); /* as Python does */
        Py_DECREF(proto);
        return r;
    }
    Py_INCREF(conn);
    PyObject *result = NULL, *code = NULL;
    long status = 0;
    if (!lane_conn_offsets(l, conn)) goto done;
    if (get(proto, po[P_RELAY_ANSWERING]) == Py_False && PyBytes_CheckExact(head) &&
        PyBytes_GET_SIZE(head) == 0)
        status = scan_answer((ptr)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    code = PyLong_FromLong(status);
    if (code == NULL) goto done;
    if (status) {
        PyObject *kinds = get(proto, po[P_RELAY_KINDS]), *runtime = get(proto, po[P_RUNTIME]);
        if (kinds == NULL || runtime == NULL) {
            PyErr_SetString(PyExc_AttributeError, "relay lane: unset slot");
            goto done;
        }
        int held = kinds != Py_None ? PySet_Contains(l->hold, code) : 0;
        int drains = held ? 0 : truth(runtime, s_draining);
        if (held < 0 || drains < 0) goto done;
        if (!held && !drains) {
            put_borrowed(proto, po[P_RELAY_STATUS], code);
            PyObject *closed = get(proto, po[P_CLOSED]);
            PyObject *transport = get(proto, po[P_TRANSPORT]);
            if (closed == Py_False && transport != NULL && transport != Py_None) {
                Py_INCREF(transport);
                PyObject *batch = get_ref(proto, po[P_BATCH], "batch");
                int written = batch == NULL ? -1 : write_now(batch, transport, data);
                Py_XDECREF(batch);
                Py_DECREF(transport);
                if (written < 0) goto done;
            }
            result = PyObject_CallMethodObjArgs(proto, s_relay_done, conn, Py_True, NULL);
            goto done;
        }
    }
    result = PyObject_CallMethodObjArgs(proto, s_relay_read, conn, data, code, NULL);
done:
    Py_XDECREF(code);
    Py_DECREF(conn);
    Py_DECREF(proto);
    return result;
}

static PyMethodDef lane_methods[] = {
    {"answer", lane_answer, METH_O, "answer(data): a read of the relayed request's answer"},
    {NULL, NULL, 0, NULL},
};

static int lane_limit(PyObject *limits, const char *name, Py_ssize_t *out) {
    PyObject *v = PyObject_GetAttrString(limits, name);
    if (v == NULL) return 0;
    int ok = to_ssize(v, out);
    Py_DECREF(v);
    return ok;
}

/* Lane(proto, plain_reads, one_safe, hold, counted_from, max_depth): limits are proto's
   (RelayClientProtocol sets them once, as it is made) */
static PyObject *lane_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *proto, *plain_reads, *one_safe, *hold;
    Py_ssize_t counted_from, max_depth;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Lane takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!O!O!nn", &proto, &PyFrozenSet_Type, &plain_reads,
                          &PyTuple_Type, &one_safe, &PyFrozenSet_Type, &hold, &counted_from,
                          &max_depth))
        return NULL;
    Lane *l = (Lane *)type->tp_alloc(type, 0);
    if (l == NULL) return NULL;
    l->vectorcall = lane_call;
    if (!find_offsets(Py_TYPE(proto), PROTO_SLOTS, P_COUNT, l->po)) {
        Py_DECREF(l);
        return NULL;
    }
    l->proto = Py_NewRef(proto);
    l->proto_type = (PyTypeObject *)Py_NewRef(Py_TYPE(proto));
    l->plain_reads = Py_NewRef(plain_reads);
    l->one_safe = Py_NewRef(one_safe);
    l->hold = Py_NewRef(hold);
    l->counted_from = counted_from;
    l->max_depth = max_depth > 1000 ? 1000 : max_depth;
    PyObject *limits = PyObject_GetAttrString(proto, "limits");
    int ok = limits != NULL && lane_limit(limits, "max_header_bytes", &l->max_header) &&
             lane_limit(limits, "max_uri_bytes", &l->max_uri) &&
             lane_limit(limits, "max_retry_body_bytes", &l->max_body) &&
             lane_limit(limits, "keepalive_requests", &l->keepalive_requests);
    Py_XDECREF(limits);
    if (!ok) {
        Py_DECREF(l);
        return NULL;
    }
    return (PyObject *)l;
}

static int lane_traverse(Lane *l, visitproc visit, void *arg) {
    Py_VISIT(l->proto);
    Py_VISIT(l->proto_type);
    Py_VISIT(l->conn_type);
    Py_VISIT(l->plain_reads);
    Py_VISIT(l->one_safe);
    Py_VISIT(l->hold);
    return 0;
}

static int lane_clear(Lane *l) {
    Py_CLEAR(l->proto);
    Py_CLEAR(l->proto_type);
    Py_CLEAR(l->conn_type);
    Py_CLEAR(l->plain_reads);
    Py_CLEAR(l->one_safe);
    Py_CLEAR(l->hold);
    return 0;
}

static void lane_dealloc(Lane *l) {
    PyObject_GC_UnTrack(l);
    lane_clear(l);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quorum_proxy._relay_scan.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A client connection's data_received with the relay's common case in C.",
    .tp_new = lane_new,
    .tp_methods = lane_methods,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Lane, vectorcall),
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_dealloc = (destructor)lane_dealloc,
};

static PyMethodDef methods[] = {
    {"plain_request", (PyCFunction)(void (*)(void))plain_request, METH_FASTCALL,
     "plain_request(data, max_header_bytes, max_uri_bytes, max_body_bytes) -> head size or -1"},
    {"plain_answer", plain_answer, METH_O, "plain_answer(data) -> status, or 0"},
    {"one_call_method", (PyCFunction)(void (*)(void))one_call_method, METH_FASTCALL,
     "one_call_method(body, max_depth) -> the method, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_relay_scan",
    "The JSON-RPC relay's hot scans in C: a strict subset of what the Python path accepts.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__relay_scan(void) {
    fill_classes();
    struct {
        PyObject **s;
        const char *text;
    } names[] = {
        {&s_draining, "draining"}, {&s_pick_primary, "pick_primary"}, {&s_idle, "idle"},
        {&s_read_timeout, "read_timeout"}, {&s_time, "time"}, {&s_write_now, "write_now"},
        {&s_relay, "_relay"}, {&s_received, "_received"}, {&s_relay_done, "_relay_done"},
        {&s_relay_read, "_relay_read"}, {&s_relay_answer, "_relay_answer"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].s = PyUnicode_InternFromString(names[i].text)) == NULL) return NULL;
    if (PyType_Ready(&LaneType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
