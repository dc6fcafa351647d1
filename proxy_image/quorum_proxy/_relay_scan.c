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
    ptr start = (ptr)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    ptr end = start + size, p = start;
    if (size < 6 || memcmp(p, "POST /", 6) != 0) return PyLong_FromLong(-1);
    p += 5;
    ptr target = p;
    while (p < end && (classes[*p] & TARGET)) p++;
    if (p - target > max_uri || end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0)
        return PyLong_FromLong(-1);
    Head h;
    /* the engine counts a header as its name, its value and 4 bytes, one more than `a:b`
       takes: a head within max_header_bytes counted so is within it as the engine reads it
       again after a failure */
    if (!scan_fields(start, p + 11, end, &h) || h.hosts != 1 || h.content_length < 0 ||
        h.head + h.lines > max_header || h.content_length > max_body ||
        h.head + h.content_length != size)
        return PyLong_FromLong(-1);
    return PyLong_FromSsize_t(h.head);
}

/* plain_answer(data) -> status, or 0: data is not one whole final answer of the subset
   (HTTP/1.1, framed by Content-Length, kept alive, a status with a body: not 1xx, 204, 304) */
static PyObject *plain_answer(PyObject *self, PyObject *data) {
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "plain_answer(bytes)");
        return NULL;
    }
    ptr start = (ptr)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    ptr end = start + size, p = start;
    if (size < 13 || memcmp(p, "HTTP/1.1 ", 9) != 0) return PyLong_FromLong(0);
    p += 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
        p[3] != ' ')
        return PyLong_FromLong(0);
    long status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (status == 204 || status == 304) return PyLong_FromLong(0);
    p += 4;
    while (p < end && (classes[*p] & FIELD)) p++;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return PyLong_FromLong(0);
    Head h;
    if (!scan_fields(start, p + 2, end, &h) || h.content_length < 0 ||
        h.head + h.content_length != size)
        return PyLong_FromLong(0);
    return PyLong_FromLong(status);
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
    J j = {(ptr)PyBytes_AS_STRING(args[0]), NULL, 1, (int)(max_depth > 1000 ? 1000 : max_depth)};
    j.end = j.p + PyBytes_GET_SIZE(args[0]);
    ws(&j);
    if (j.p >= j.end || *j.p != '{') Py_RETURN_NONE;
    j.p++;
    ws(&j);
    int seen = 0;
    ptr method = NULL;
    Py_ssize_t method_len = 0;
    if (j.p < j.end && *j.p == '}') Py_RETURN_NONE; /* no method */
    for (;;) {
        ptr key;
        Py_ssize_t key_len;
        int escaped;
        if (j.p >= j.end || *j.p != '"' || !string(&j, &key, &key_len, &escaped) || escaped)
            Py_RETURN_NONE;
        int field = -1;
        for (int i = 0; i < 4; i++) {
            if ((Py_ssize_t)strlen(FIELDS[i]) == key_len &&
                memcmp(key, FIELDS[i], (size_t)key_len) == 0)
                field = i;
        }
        if (field < 0 || (seen & (1 << field))) Py_RETURN_NONE;
        seen |= 1 << field;
        ws(&j);
        if (j.p >= j.end || *j.p != ':') Py_RETURN_NONE;
        j.p++;
        ws(&j);
        if (field == 1) {
            if (j.p >= j.end || *j.p != '"' || !string(&j, &method, &method_len, &escaped) ||
                escaped)
                Py_RETURN_NONE;
        } else if (!value(&j)) {
            Py_RETURN_NONE;
        }
        ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            ws(&j);
            continue;
        }
        break;
    }
    if (j.p >= j.end || *j.p != '}' || method == NULL) Py_RETURN_NONE;
    j.p++;
    ws(&j);
    if (j.p != j.end) Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize((const char *)method, method_len);
}

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
    return PyModule_Create(&module);
}
