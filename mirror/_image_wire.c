/* mirror._image_wire: an image's parsed JSON (as orjson.loads gives it) to the
 * protobuf wire bytes of the SDK's yandex.cloud.containerregistry.v1.Image.
 *
 * The C twin of mirror/image_wire.py's fast path, for the same shapes only:
 * exact dicts holding only the keys Image and Blob know by their JSON names,
 * exact str, exact list, int64 as an int or a decimal text of ASCII digits,
 * createdAt as RFC 3339 (YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+hh:mm|-hh:mm)).
 * Anything else (a null where the Python encoder would judge it, an unknown
 * key, a float, a lone surrogate, a date out of range) returns None and the
 * caller takes the Python encoder, which drops unknown keys or hands the doc to
 * json_format. So whenever this returns bytes they are the Python encoder's,
 * which tests/unit/test_image_wire.py holds equal to json_format's, on both.
 *
 * Field numbers are the SDK's (TAGS below); mirror/image_wire.py compares them
 * with the descriptors at import and does not use this module if they differ.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define OK 0
#define SLOW 1  /* not a shape handled here: the caller takes the Python encoder */
#define FAIL -1 /* a Python exception is set (out of memory) */

/* Tags: field number << 3 | wire type (0 varint, 2 length-delimited). */
#define IMAGE_ID 0x0A
#define IMAGE_NAME 0x12
#define IMAGE_DIGEST 0x1A
#define IMAGE_SIZE 0x20
#define IMAGE_CONFIG 0x2A
#define IMAGE_LAYERS 0x32
#define IMAGE_TAGS 0x3A
#define IMAGE_CREATED 0x42
#define BLOB_ID 0x0A
#define BLOB_DIGEST 0x12
#define BLOB_SIZE 0x18
#define BLOB_URLS 0x22
#define SECONDS 0x08
#define NANOS 0x10
#define PAGE_IMAGES 0x0A
#define PAGE_TOKEN 0x12

#define TIMESTAMP_MIN_SECONDS (-62135596800LL)
#define TIMESTAMP_MAX_SECONDS 253402300799LL

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char local[2048];
} Buf;

static void buf_init(Buf *b) {
    b->data = b->local;
    b->len = 0;
    b->cap = (Py_ssize_t)sizeof(b->local);
}

static void buf_free(Buf *b) {
    if (b->data != b->local) {
        PyMem_Free(b->data);
    }
}

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) {
        return OK;
    }
    Py_ssize_t cap = b->cap;
    while (cap < b->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return FAIL;
        }
        cap *= 2;
    }
    char *data;
    if (b->data == b->local) {
        data = PyMem_Malloc(cap);
        if (data != NULL) {
            memcpy(data, b->local, b->len);
        }
    } else {
        data = PyMem_Realloc(b->data, cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return FAIL;
    }
    b->data = data;
    b->cap = cap;
    return OK;
}

static int varint_size(uint64_t n) {
    int size = 1;
    while (n >= 0x80) {
        n >>= 7;
        size++;
    }
    return size;
}

/* Room must have been reserved (10 bytes at most). */
static void put_varint(Buf *b, uint64_t n) {
    while (n >= 0x80) {
        b->data[b->len++] = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    b->data[b->len++] = (char)n;
}

static int put_tag_varint(Buf *b, int tag, uint64_t n) {
    if (buf_reserve(b, 11) < 0) {
        return FAIL;
    }
    b->data[b->len++] = (char)tag;
    put_varint(b, n);
    return OK;
}

/* Room must have been reserved (11 bytes and ``size``). */
static void put_tag_bytes_unchecked(Buf *b, int tag, const char *data, Py_ssize_t size) {
    b->data[b->len++] = (char)tag;
    put_varint(b, (uint64_t)size);
    memcpy(b->data + b->len, data, size);
    b->len += size;
}

static int put_tag_bytes(Buf *b, int tag, const char *data, Py_ssize_t size) {
    if (buf_reserve(b, 11 + size) < 0) {
        return FAIL;
    }
    put_tag_bytes_unchecked(b, tag, data, size);
    return OK;
}

/* A sub-message: its tag and a one-byte length now, the length fixed by message_end. */
static int message_begin(Buf *b, int tag, Py_ssize_t *start) {
    if (buf_reserve(b, 2) < 0) {
        return FAIL;
    }
    b->data[b->len++] = (char)tag;
    *start = b->len;
    b->data[b->len++] = 0;
    return OK;
}

static int message_end(Buf *b, Py_ssize_t start) {
    Py_ssize_t size = b->len - start - 1;
    if (size < 0x80) {
        b->data[start] = (char)size;
        return OK;
    }
    int extra = varint_size((uint64_t)size) - 1;
    if (buf_reserve(b, extra) < 0) {
        return FAIL;
    }
    memmove(b->data + start + 1 + extra, b->data + start + 1, size);
    Py_ssize_t end = b->len + extra;
    b->len = start;
    put_varint(b, (uint64_t)size);
    b->len = end;
    return OK;
}

/* A str as a string field (the UTF-8 of an exact str; a lone surrogate is SLOW). */
static int put_string(Buf *b, int tag, PyObject *value) {
    if (!PyUnicode_CheckExact(value)) {
        return SLOW;
    }
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(value, &size);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            return FAIL;
        }
        PyErr_Clear();
        return SLOW;
    }
    return put_tag_bytes(b, tag, data, size);
}

/* id, name, digest: absent when null or empty. */
static int put_scalar_string(Buf *b, int tag, PyObject *value) {
    if (value == NULL || value == Py_None) {
        return OK;
    }
    if (PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) == 0) {
        return OK;
    }
    return put_string(b, tag, value);
}

/* A repeated string: every element, empty ones too. */
static int put_strings(Buf *b, int tag, PyObject *values) {
    if (values == NULL || values == Py_None) {
        return OK;
    }
    if (!PyList_CheckExact(values)) {
        return SLOW;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        int rc = put_string(b, tag, PyList_GET_ITEM(values, i));
        if (rc != OK) {
            return rc;
        }
    }
    return OK;
}

/* 1 to 19 ASCII digits of a number below 2**63 (leading zeros allowed): 1 and ``*out``. */
static int int64_digits(const Py_UCS1 *digits, Py_ssize_t size, uint64_t *out) {
    uint64_t number = 0;
    if (size < 1 || size > 19) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        if (digits[i] < '0' || digits[i] > '9') {
            return 0;
        }
        number = number * 10 + (uint64_t)(digits[i] - '0'); /* < 10**19 < 2**64 */
    }
    if (number >> 63) {
        return 0;
    }
    *out = number;
    return 1;
}

/* int64 from an int or a text of 1 to 19 ASCII digits, 0 <= n < 2**63; zero is absent. */
static int put_int64(Buf *b, int tag, PyObject *value) {
    uint64_t number = 0;
    if (value == NULL || value == Py_None) {
        return OK;
    }
    if (PyUnicode_CheckExact(value)) {
        if (!PyUnicode_IS_ASCII(value) ||
            !int64_digits(PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value), &number)) {
            return SLOW;
        }
    } else if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (n == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return SLOW;
        }
        if (overflow || n < 0) {
            return SLOW;
        }
        number = (uint64_t)n;
    } else {
        return SLOW;
    }
    return number ? put_tag_varint(b, tag, number) : OK;
}

static PyObject *K_ID, *K_NAME, *K_DIGEST, *K_COMPRESSED_SIZE, *K_CONFIG, *K_LAYERS,
    *K_TAGS, *K_CREATED_AT, *K_SIZE, *K_URLS;

/* The value of ``key`` (borrowed) or NULL when absent; ``*found`` counts keys present. */
static int lookup(PyObject *dict, PyObject *key, PyObject **value, Py_ssize_t *found) {
    *value = PyDict_GetItemWithError(dict, key);
    if (*value != NULL) {
        (*found)++;
        return OK;
    }
    return PyErr_Occurred() ? FAIL : OK;
}

static int put_blob(Buf *b, int tag, PyObject *blob) {
    if (!PyDict_CheckExact(blob)) {
        return SLOW;
    }
    PyObject *id, *digest, *size, *urls;
    Py_ssize_t found = 0, start;
    int rc;
    if (lookup(blob, K_ID, &id, &found) || lookup(blob, K_DIGEST, &digest, &found) ||
        lookup(blob, K_SIZE, &size, &found) || lookup(blob, K_URLS, &urls, &found)) {
        return FAIL;
    }
    if (found != PyDict_GET_SIZE(blob)) {
        return SLOW; /* a key Blob does not know by this name */
    }
    if ((rc = message_begin(b, tag, &start)) != OK ||
        (rc = put_scalar_string(b, BLOB_ID, id)) != OK ||
        (rc = put_scalar_string(b, BLOB_DIGEST, digest)) != OK ||
        (rc = put_int64(b, BLOB_SIZE, size)) != OK ||
        (rc = put_strings(b, BLOB_URLS, urls)) != OK) {
        return rc;
    }
    return message_end(b, start);
}

static int two_digits(const Py_UCS1 *s, int *out) {
    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9') {
        return 0;
    }
    *out = (s[0] - '0') * 10 + (s[1] - '0');
    return 1;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar (y >= 1). */
static long long days_from_civil(long long y, int m, int d) {
    y -= m <= 2;
    long long era = y / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) {
        return 29;
    }
    return days[m - 1];
}

/* createdAt as google.protobuf.Timestamp, as Timestamp.FromJsonString reads it. */
static int put_timestamp_text(Buf *b, const Py_UCS1 *s, Py_ssize_t size) {
    int c1, c2, month, day, hour, minute, second;
    if (size < 20 || !two_digits(s, &c1) || !two_digits(s + 2, &c2) || s[4] != '-' ||
        !two_digits(s + 5, &month) || s[7] != '-' || !two_digits(s + 8, &day) ||
        s[10] != 'T' || !two_digits(s + 11, &hour) || s[13] != ':' ||
        !two_digits(s + 14, &minute) || s[16] != ':' || !two_digits(s + 17, &second)) {
        return SLOW;
    }
    int year = c1 * 100 + c2;
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) ||
        hour > 23 || minute > 59 || second > 59) {
        return SLOW;
    }
    Py_ssize_t i = 19;
    long long nanos = 0;
    if (s[i] == '.') {
        int digits = 0;
        for (i++; i < size && s[i] >= '0' && s[i] <= '9'; i++) {
            if (++digits > 9) {
                return SLOW;
            }
            nanos = nanos * 10 + (s[i] - '0');
        }
        if (digits == 0) {
            return SLOW;
        }
        for (; digits < 9; digits++) {
            nanos *= 10;
        }
    }
    long long seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 +
                        second;
    if (i == size - 1 && s[i] == 'Z') {
        /* UTC */
    } else if (i == size - 6 && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int zone_h, zone_m;
        if (!two_digits(s + i + 1, &zone_h) || !two_digits(s + i + 4, &zone_m)) {
            return SLOW;
        }
        long long offset = (zone_h * 60LL + zone_m) * 60;
        seconds += s[i] == '+' ? -offset : offset;
    } else {
        return SLOW;
    }
    if (seconds < TIMESTAMP_MIN_SECONDS || seconds > TIMESTAMP_MAX_SECONDS) {
        return SLOW;
    }
    Py_ssize_t start;
    if (message_begin(b, IMAGE_CREATED, &start) != OK ||
        (seconds && put_tag_varint(b, SECONDS, (uint64_t)seconds) != OK) ||
        (nanos && put_tag_varint(b, NANOS, (uint64_t)nanos) != OK)) {
        return FAIL;
    }
    return message_end(b, start);
}

static int put_timestamp(Buf *b, PyObject *value) {
    if (value == NULL || value == Py_None) {
        return OK;
    }
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        return SLOW;
    }
    return put_timestamp_text(b, PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value));
}

static int put_image(Buf *b, PyObject *image) {
    if (!PyDict_CheckExact(image)) {
        return SLOW;
    }
    PyObject *id, *name, *digest, *size, *config, *layers, *tags, *created;
    Py_ssize_t found = 0;
    int rc;
    if (lookup(image, K_ID, &id, &found) || lookup(image, K_NAME, &name, &found) ||
        lookup(image, K_DIGEST, &digest, &found) ||
        lookup(image, K_COMPRESSED_SIZE, &size, &found) ||
        lookup(image, K_CONFIG, &config, &found) || lookup(image, K_LAYERS, &layers, &found) ||
        lookup(image, K_TAGS, &tags, &found) || lookup(image, K_CREATED_AT, &created, &found)) {
        return FAIL;
    }
    if (found != PyDict_GET_SIZE(image)) {
        return SLOW; /* a key Image does not know by this name */
    }
    if ((rc = put_scalar_string(b, IMAGE_ID, id)) != OK ||
        (rc = put_scalar_string(b, IMAGE_NAME, name)) != OK ||
        (rc = put_scalar_string(b, IMAGE_DIGEST, digest)) != OK ||
        (rc = put_int64(b, IMAGE_SIZE, size)) != OK) {
        return rc;
    }
    if (config != NULL && config != Py_None && (rc = put_blob(b, IMAGE_CONFIG, config)) != OK) {
        return rc;
    }
    if (layers != NULL && layers != Py_None) {
        if (!PyList_CheckExact(layers)) {
            return SLOW;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(layers); i++) {
            if ((rc = put_blob(b, IMAGE_LAYERS, PyList_GET_ITEM(layers, i))) != OK) {
                return rc;
            }
        }
    }
    if ((rc = put_strings(b, IMAGE_TAGS, tags)) != OK) {
        return rc;
    }
    return put_timestamp(b, created);
}

/* ---- The same from the JSON text itself (no Python objects made) ----------------------
 *
 * A strict subset of JSON, read as orjson.loads would read it: objects, arrays,
 * null, strings of printable ASCII without escapes, and non-negative integers
 * (no fraction, exponent or leading zero). Any other text (an escape, a byte of
 * 0x80 or more, true/false, a float, a duplicate or unknown key, anything not
 * JSON) is SLOW: the caller takes orjson.loads and the encoders above. Keys may
 * come in any order (jsonb sorts them): each object is read once to find its
 * values, then its fields are written in field-number order, objects and arrays
 * read again from where they start. */

typedef struct {
    const char *p;
    const char *end;
} Cur;

typedef enum { V_ABSENT, V_NULL, V_STR, V_NUM, V_CONTAINER } Kind;

typedef struct {
    Kind kind;
    const char *s; /* V_STR: the string's bytes; V_NUM: its digits; V_CONTAINER: the '{' or '[' */
    Py_ssize_t n;
} Val;

static void ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) {
        c->p++;
    }
}

/* Past ``ch`` and the whitespace after it, or SLOW. */
static int expect(Cur *c, char ch) {
    if (c->p >= c->end || *c->p != ch) {
        return SLOW;
    }
    c->p++;
    ws(c);
    return OK;
}

static int plain_string(Cur *c, const char **s, Py_ssize_t *n) {
    if (c->p >= c->end || *c->p != '"') {
        return SLOW;
    }
    const char *start = ++c->p;
    /* Eight bytes at a time while none is '"', '\\', below 0x20 or 0x80 and above. */
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (c->end - c->p >= 8) {
        uint64_t w;
        memcpy(&w, c->p, 8);
        uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
        uint64_t special = ((quote - ones) & ~quote) | ((slash - ones) & ~slash) |
                           (w - ones * 0x20) | w;
        if (special & highs) {
            break;
        }
        c->p += 8;
    }
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *s = start;
            *n = c->p - start;
            c->p++;
            ws(c);
            return OK;
        }
        if (ch == '\\' || ch < 0x20 || ch >= 0x80) {
            return SLOW;
        }
        c->p++;
    }
    return SLOW;
}

/* null, a plain string or an integer; an object or array only marked (not read) here. */
static int scalar(Cur *c, Val *v) {
    if (c->p >= c->end) {
        return SLOW;
    }
    char ch = *c->p;
    if (ch == '"') {
        v->kind = V_STR;
        return plain_string(c, &v->s, &v->n);
    }
    if (ch == 'n') {
        if (c->end - c->p < 4 || memcmp(c->p, "null", 4) != 0) {
            return SLOW;
        }
        c->p += 4;
        v->kind = V_NULL;
        ws(c);
        return OK;
    }
    if (ch >= '0' && ch <= '9') {
        const char *start = c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            c->p++;
        }
        if ((c->p - start > 1 && *start == '0') ||
            (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))) {
            return SLOW; /* a leading zero (not JSON) or a float */
        }
        v->kind = V_NUM;
        v->s = start;
        v->n = c->p - start;
        ws(c);
        return OK;
    }
    return SLOW;
}

/* The next member's key (one of ``keys``, each at most once) and its ':'; -1 at '}'. */
static int member(Cur *c, const char *const *keys, int count, Val *values, int *index) {
    const char *s;
    Py_ssize_t n;
    if (c->p < c->end && *c->p == '}') {
        *index = -1;
        return OK;
    }
    if (plain_string(c, &s, &n) != OK || expect(c, ':') != OK) {
        return SLOW;
    }
    for (int i = 0; i < count; i++) {
        if ((Py_ssize_t)strlen(keys[i]) == n && memcmp(keys[i], s, n) == 0) {
            if (values[i].kind != V_ABSENT) {
                return SLOW; /* a duplicate key: orjson keeps the last, judged there */
            }
            *index = i;
            return OK;
        }
    }
    return SLOW; /* a key this message does not know by this name */
}

/* After a member's value: ',' and the next key, or the object's end (*done). */
static int after_member(Cur *c, int *done) {
    if (c->p < c->end && *c->p == ',') {
        c->p++;
        ws(c);
        if (c->p < c->end && *c->p == '}') {
            return SLOW; /* a trailing comma */
        }
        *done = 0;
        return OK;
    }
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        ws(c);
        *done = 1;
        return OK;
    }
    return SLOW;
}

/* An array's elements, each read by ``element`` (the cursor on its first byte). */
typedef int (*Element)(Cur *c, Buf *b, int tag);

static int array(Cur *c, Buf *b, int tag, Element element) {
    if (expect(c, '[') != OK) {
        return SLOW;
    }
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        ws(c);
        return OK;
    }
    for (;;) {
        int rc = element(c, b, tag);
        if (rc != OK) {
            return rc;
        }
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            ws(c);
            continue;
        }
        return expect(c, ']');
    }
}

/* A string of a repeated field: written even when empty. */
static int string_element(Cur *c, Buf *b, int tag) {
    const char *s;
    Py_ssize_t n;
    if (plain_string(c, &s, &n) != OK) {
        return SLOW;
    }
    return b == NULL ? OK : put_tag_bytes(b, tag, s, n);
}

/* A repeated string's value: null (absent) or an array of strings; ``b`` NULL: read only. */
static int strings_value(Cur *c, Buf *b, int tag) {
    if (*c->p == 'n') {
        Val v = {V_ABSENT, NULL, 0};
        return scalar(c, &v);
    }
    return array(c, b, tag, string_element);
}

static int text_scalar_string(Buf *b, int tag, const Val *v) {
    if (v->kind == V_ABSENT || v->kind == V_NULL || (v->kind == V_STR && v->n == 0)) {
        return OK;
    }
    if (v->kind != V_STR) {
        return SLOW;
    }
    return put_tag_bytes(b, tag, v->s, v->n);
}

static int text_int64(Buf *b, int tag, const Val *v) {
    uint64_t number;
    if (v->kind == V_ABSENT || v->kind == V_NULL) {
        return OK;
    }
    if ((v->kind != V_STR && v->kind != V_NUM) ||
        !int64_digits((const Py_UCS1 *)v->s, v->n, &number)) {
        return SLOW;
    }
    return number ? put_tag_varint(b, tag, number) : OK;
}

/* Where an object or array value starts; the value read through (checked) by ``read``. */
static int container(Cur *c, Val *v, Element read, int tag) {
    v->kind = V_CONTAINER;
    v->s = c->p;
    return read(c, NULL, tag);
}

static const char *const BLOB_KEYS[] = {"id", "digest", "size", "urls"};

/* A Blob object as the field ``tag``; ``b`` NULL: read and checked only. */
static int blob_value(Cur *c, Buf *b, int tag) {
    Val v[4] = {{V_ABSENT, NULL, 0}, {V_ABSENT, NULL, 0}, {V_ABSENT, NULL, 0}, {V_ABSENT, NULL, 0}};
    int done = 0, i, rc;
    if (expect(c, '{') != OK) {
        return SLOW;
    }
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        ws(c);
        done = 1;
    }
    while (!done) {
        if (member(c, BLOB_KEYS, 4, v, &i) != OK || i < 0 || c->p >= c->end) {
            return SLOW;
        }
        if (i == 3 && *c->p != 'n') {
            rc = container(c, &v[i], strings_value, BLOB_URLS);
        } else {
            rc = scalar(c, &v[i]);
        }
        if (rc != OK) {
            return rc;
        }
        if (after_member(c, &done) != OK) {
            return SLOW;
        }
    }
    if (b == NULL) {
        return OK;
    }
    Py_ssize_t start;
    if ((rc = message_begin(b, tag, &start)) != OK ||
        (rc = text_scalar_string(b, BLOB_ID, &v[0])) != OK ||
        (rc = text_scalar_string(b, BLOB_DIGEST, &v[1])) != OK ||
        (rc = text_int64(b, BLOB_SIZE, &v[2])) != OK) {
        return rc;
    }
    if (v[3].kind == V_CONTAINER) {
        Cur again = {v[3].s, c->end};
        if ((rc = strings_value(&again, b, BLOB_URLS)) != OK) {
            return rc;
        }
    } else if (v[3].kind != V_ABSENT && v[3].kind != V_NULL) {
        return SLOW;
    }
    return message_end(b, start);
}

/* config: null (absent) or a Blob object. */
static int config_value(Cur *c, Buf *b, int tag) {
    if (*c->p == 'n') {
        Val v = {V_ABSENT, NULL, 0};
        return scalar(c, &v);
    }
    return blob_value(c, b, tag);
}

/* layers: null (absent) or an array of Blob objects. */
static int layers_value(Cur *c, Buf *b, int tag) {
    if (*c->p == 'n') {
        Val v = {V_ABSENT, NULL, 0};
        return scalar(c, &v);
    }
    return array(c, b, tag, blob_value);
}

static const char *const IMAGE_KEYS[] = {"id",     "name",   "digest", "compressedSize",
                                         "config", "layers", "tags",   "createdAt"};

/* ``parts``: config, layers and tags, written as they are read (jsonb puts them before
 * digest, createdAt and compressedSize), joined after the fields before them. */
static int put_image_text(Buf *b, Buf *parts, const char *text, Py_ssize_t size) {
    static const Element writers[3] = {config_value, layers_value, strings_value};
    static const int tags[3] = {IMAGE_CONFIG, IMAGE_LAYERS, IMAGE_TAGS};
    Cur c = {text, text + size};
    Val v[8];
    int done = 0, i, rc;
    for (i = 0; i < 8; i++) {
        v[i].kind = V_ABSENT;
    }
    ws(&c);
    if (expect(&c, '{') != OK) {
        return SLOW;
    }
    if (c.p < c.end && *c.p == '}') {
        c.p++;
        ws(&c);
        done = 1;
    }
    while (!done) {
        if (member(&c, IMAGE_KEYS, 8, v, &i) != OK || i < 0 || c.p >= c.end) {
            return SLOW;
        }
        if (i >= 4 && i <= 6) {
            v[i].kind = V_CONTAINER; /* or null: nothing written */
            rc = writers[i - 4](&c, &parts[i - 4], tags[i - 4]);
        } else {
            rc = scalar(&c, &v[i]);
        }
        if (rc != OK || after_member(&c, &done) != OK) {
            return rc == FAIL ? FAIL : SLOW;
        }
    }
    if (c.p != c.end) {
        return SLOW; /* text after the object */
    }
    if ((rc = text_scalar_string(b, IMAGE_ID, &v[0])) != OK ||
        (rc = text_scalar_string(b, IMAGE_NAME, &v[1])) != OK ||
        (rc = text_scalar_string(b, IMAGE_DIGEST, &v[2])) != OK ||
        (rc = text_int64(b, IMAGE_SIZE, &v[3])) != OK) {
        return rc;
    }
    for (i = 0; i < 3; i++) {
        if (parts[i].len) {
            if (buf_reserve(b, parts[i].len) != OK) {
                return FAIL;
            }
            memcpy(b->data + b->len, parts[i].data, parts[i].len);
            b->len += parts[i].len;
        }
    }
    if (v[7].kind == V_ABSENT || v[7].kind == V_NULL) {
        return OK;
    }
    if (v[7].kind != V_STR) {
        return SLOW;
    }
    return put_timestamp_text(b, (const Py_UCS1 *)v[7].s, v[7].n);
}

PyDoc_STRVAR(doc_doc,
             "doc(text, /)\n--\n\n"
             "The serialized Image of one image's JSON text (bytes), or None for a text\n"
             "this module does not read (the caller then takes orjson.loads and image()).");

static PyObject *doc(PyObject *module, PyObject *text) {
    if (!PyBytes_CheckExact(text)) {
        Py_RETURN_NONE;
    }
    Buf b, parts[3];
    buf_init(&b);
    for (int i = 0; i < 3; i++) {
        buf_init(&parts[i]);
    }
    PyObject *out = NULL;
    int rc = put_image_text(&b, parts, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text));
    if (rc == OK) {
        out = PyBytes_FromStringAndSize(b.data, b.len);
    } else if (rc == SLOW) {
        out = Py_NewRef(Py_None);
    }
    buf_free(&b);
    for (int i = 0; i < 3; i++) {
        buf_free(&parts[i]);
    }
    return out;
}

PyDoc_STRVAR(image_doc,
             "image(doc, /)\n--\n\n"
             "The serialized Image of one image's parsed JSON, or None for a shape\n"
             "this module does not encode (the caller then takes the Python encoder).");

static PyObject *image(PyObject *module, PyObject *doc) {
    Buf b;
    buf_init(&b);
    PyObject *out = NULL;
    int rc = put_image(&b, doc);
    if (rc == OK) {
        out = PyBytes_FromStringAndSize(b.data, b.len);
    } else if (rc == SLOW) {
        out = Py_NewRef(Py_None);
    }
    buf_free(&b);
    return out;
}

PyDoc_STRVAR(page_doc,
             "page(images, next_page_token, /)\n--\n\n"
             "ListImagesResponse (serialized) of a list of serialized Images and the token.");

static PyObject *page(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyUnicode_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "page(list[bytes], str)");
        return NULL;
    }
    PyObject *images = args[0];
    Py_ssize_t token_size, total = 0, count = PyList_GET_SIZE(images);
    const char *token = PyUnicode_AsUTF8AndSize(args[1], &token_size);
    if (token == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(images, i);
        if (!PyBytes_CheckExact(item)) {
            PyErr_SetString(PyExc_TypeError, "page(list[bytes], str)");
            return NULL;
        }
        total += 1 + varint_size((uint64_t)PyBytes_GET_SIZE(item)) + PyBytes_GET_SIZE(item);
    }
    if (token_size) {
        total += 1 + varint_size((uint64_t)token_size) + token_size;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        return NULL;
    }
    Buf b = {.data = PyBytes_AS_STRING(out), .len = 0, .cap = total}; /* sized exactly */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(images, i);
        put_tag_bytes_unchecked(&b, PAGE_IMAGES, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
    }
    if (token_size) {
        put_tag_bytes_unchecked(&b, PAGE_TOKEN, token, token_size);
    }
    return out;
}

/* An image's JSON from its stored template (sql/104; mirror/model.py, doc_template):
 * "%%" is "%", "%N$s" the N-th value: 1-3 the fragments, 4 the digest after its
 * first 7 characters, 5 on the hex of each blob key. The same as PostgreSQL's
 * format(template, VARIADIC values), which image_doc runs; tests/unit/test_image_wire.py
 * holds it equal to mirror/model.py's render_doc_template. */
static const char *const FRAGMENTS[] = {"\",\"digest\":\"sha256:", "\"},{\"id\":\"", "\",\"size\":\""};
#define N_FRAGMENTS 3

PyDoc_STRVAR(fill_doc,
             "fill(template, digest, keys, sizes=None, blob_ids=None, image_id=None, name=None, /)\n--\n\n"
             "An image's JSON (bytes) from its template (UTF-8 bytes), its digest and its\n"
             "blob keys as PostgreSQL's array_send gives a bytea[] (one bytes object: no\n"
             "Python object an element), or None for a placeholder that names no value or\n"
             "keys that are no such array (the caller then takes the Python reference).\n"
             "A template of the second kind (sql/111) also takes the blob sizes (array_send\n"
             "of a bigint[]), the row's blob_ids, id and name (str): values 5 and 6 are\n"
             "then the id and name, 6 + n the n-th blob's object.");

/* A big-endian int32 of PostgreSQL's binary formats. */
static int32_t be32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                     (uint32_t)p[3]);
}

#define MAX_KEYS 4096

/* The elements of a one-dimensional array as PostgreSQL's array_send writes it (ndim,
 * has-nulls flag, element type; per dimension its size and lower bound; then each
 * element as its length and bytes, -1 a NULL), or FAIL for anything else. */
static int array_elements(PyObject *sent, const unsigned char **at_out, Py_ssize_t *len_out,
                          Py_ssize_t *count_out) {
    const unsigned char *a = (const unsigned char *)PyBytes_AS_STRING(sent);
    Py_ssize_t a_size = PyBytes_GET_SIZE(sent);
    *count_out = 0;
    if (a_size < 12) {
        return FAIL;
    }
    int32_t ndim = be32(a);
    if (ndim == 0) {
        return OK;
    }
    if (ndim != 1 || a_size < 20) {
        return FAIL;
    }
    int32_t count = be32(a + 12);
    if (count < 0 || count > MAX_KEYS) {
        return FAIL;
    }
    Py_ssize_t at = 20;
    for (int32_t k = 0; k < count; k++) {
        if (at + 4 > a_size) {
            return FAIL;
        }
        int32_t len = be32(a + at);
        at += 4;
        if (len < 0 || at + len > a_size) {
            return FAIL;
        }
        at_out[k] = a + at;
        len_out[k] = len;
        at += len;
    }
    *count_out = count;
    return OK;
}

static PyObject *fill(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if ((nargs != 3 && nargs != 7) || !PyBytes_CheckExact(args[0]) ||
        !PyUnicode_CheckExact(args[1]) || !PyBytes_CheckExact(args[2]) ||
        (nargs == 7 && args[4] != Py_None &&
         (!PyBytes_CheckExact(args[3]) || !PyUnicode_CheckExact(args[4]) ||
          !PyUnicode_CheckExact(args[5]) || !PyUnicode_CheckExact(args[6])))) {
        PyErr_SetString(PyExc_TypeError, "fill(bytes, str, bytes[, bytes, str, str, str])");
        return NULL;
    }
    const char *t = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]), digest_size;
    const char *digest = PyUnicode_AsUTF8AndSize(args[1], &digest_size);
    if (digest == NULL) {
        return NULL;
    }
    /* the digest after its first 7 characters (code points, as substr and str slicing) */
    Py_ssize_t skip = 0;
    for (int chars = 0; chars < 7 && skip < digest_size; chars++) {
        skip++;
        while (skip < digest_size && ((unsigned char)digest[skip] & 0xC0) == 0x80) {
            skip++;
        }
    }
    const unsigned char *key_at[MAX_KEYS];
    Py_ssize_t key_len[MAX_KEYS];
    Py_ssize_t key_count = 0;
    if (array_elements(args[2], key_at, key_len, &key_count) != OK) {
        Py_RETURN_NONE;
    }
    /* the second kind: each blob's size (8 bytes, big-endian) and id (split at ' ') */
    int objects = nargs == 7 && args[4] != Py_None;
    const char *own[2] = {NULL, NULL}; /* the image's id and name */
    Py_ssize_t own_len[2] = {0, 0};
    const unsigned char *size_at[MAX_KEYS];
    Py_ssize_t size_len[MAX_KEYS];
    Py_ssize_t size_count = 0;
    const char *id_at[MAX_KEYS];
    Py_ssize_t id_len[MAX_KEYS];
    Py_ssize_t id_count = 0;
    if (objects) {
        Py_ssize_t ids_size;
        const char *ids = PyUnicode_AsUTF8AndSize(args[4], &ids_size);
        if (ids == NULL) {
            return NULL;
        }
        for (int k = 0; k < 2; k++) {
            own[k] = PyUnicode_AsUTF8AndSize(args[5 + k], &own_len[k]);
            if (own[k] == NULL) {
                return NULL;
            }
        }
        if (array_elements(args[3], size_at, size_len, &size_count) != OK) {
            Py_RETURN_NONE;
        }
        for (Py_ssize_t k = 0; k < size_count; k++) {
            if (size_len[k] != 8) {
                Py_RETURN_NONE;
            }
        }
        Py_ssize_t start = 0;
        while (ids_size > 0 && start <= ids_size) {
            const char *space = memchr(ids + start, ' ', (size_t)(ids_size - start));
            Py_ssize_t end = space == NULL ? ids_size : space - ids;
            if (id_count == MAX_KEYS) {
                Py_RETURN_NONE;
            }
            id_at[id_count] = ids + start;
            id_len[id_count++] = end - start;
            start = end + 1;
        }
    }
    static const char hex[] = "0123456789abcdef";
    Buf b;
    buf_init(&b);
    PyObject *out = NULL;
    Py_ssize_t i = 0;
    while (i < n) {
        const char *percent = memchr(t + i, '%', (size_t)(n - i));
        Py_ssize_t plain = (percent == NULL ? n : percent - t) - i;
        if (buf_reserve(&b, plain) != OK) {
            goto done;
        }
        memcpy(b.data + b.len, t + i, (size_t)plain);
        b.len += plain;
        i += plain;
        if (i >= n) {
            break;
        }
        i++; /* the '%' */
        if (i < n && t[i] == '%') {
            if (buf_reserve(&b, 1) != OK) {
                goto done;
            }
            b.data[b.len++] = '%';
            i++;
            continue;
        }
        Py_ssize_t number = 0;
        Py_ssize_t digits = 0;
        while (i < n && t[i] >= '0' && t[i] <= '9' && digits < 9) {
            number = number * 10 + (t[i] - '0');
            i++;
            digits++;
        }
        if (digits == 0 || number == 0 || i + 1 >= n || t[i] != '$' || t[i + 1] != 's') {
            out = Py_NewRef(Py_None);
            goto done;
        }
        i += 2;
        if (number <= N_FRAGMENTS) {
            Py_ssize_t size = (Py_ssize_t)strlen(FRAGMENTS[number - 1]);
            if (buf_reserve(&b, size) != OK) {
                goto done;
            }
            memcpy(b.data + b.len, FRAGMENTS[number - 1], (size_t)size);
            b.len += size;
        } else if (number == N_FRAGMENTS + 1) {
            if (buf_reserve(&b, digest_size - skip) != OK) {
                goto done;
            }
            memcpy(b.data + b.len, digest + skip, (size_t)(digest_size - skip));
            b.len += digest_size - skip;
        } else if (objects && number <= N_FRAGMENTS + 3) {
            Py_ssize_t size = own_len[number - N_FRAGMENTS - 2];
            if (buf_reserve(&b, size) != OK) {
                goto done;
            }
            memcpy(b.data + b.len, own[number - N_FRAGMENTS - 2], (size_t)size);
            b.len += size;
        } else if (!objects && number - N_FRAGMENTS - 2 < key_count) {
            const unsigned char *raw = key_at[number - N_FRAGMENTS - 2];
            Py_ssize_t size = key_len[number - N_FRAGMENTS - 2];
            if (buf_reserve(&b, 2 * size) != OK) {
                goto done;
            }
            for (Py_ssize_t k = 0; k < size; k++) {
                b.data[b.len++] = hex[raw[k] >> 4];
                b.data[b.len++] = hex[raw[k] & 0x0F];
            }
        } else if (objects && number - N_FRAGMENTS - 4 < key_count &&
                   number - N_FRAGMENTS - 4 < size_count && number - N_FRAGMENTS - 4 < id_count) {
            Py_ssize_t at = number - N_FRAGMENTS - 4;
            const unsigned char *raw = key_at[at];
            /* {"id":"<id>","digest":"sha256:<hex>","size":"<decimal>"} */
            char digits[24];
            int64_t value = (int64_t)((uint64_t)be32(size_at[at]) << 32 |
                                      (uint32_t)be32(size_at[at] + 4));
            int n_digits = snprintf(digits, sizeof digits, "%lld", (long long)value);
            if (buf_reserve(&b, 7 + id_len[at] + 19 + 2 * key_len[at] + 10 + n_digits + 2) != OK) {
                goto done;
            }
            memcpy(b.data + b.len, "{\"id\":\"", 7);
            b.len += 7;
            memcpy(b.data + b.len, id_at[at], (size_t)id_len[at]);
            b.len += id_len[at];
            memcpy(b.data + b.len, FRAGMENTS[0], 19);
            b.len += 19;
            for (Py_ssize_t k = 0; k < key_len[at]; k++) {
                b.data[b.len++] = hex[raw[k] >> 4];
                b.data[b.len++] = hex[raw[k] & 0x0F];
            }
            memcpy(b.data + b.len, FRAGMENTS[2], 10);
            b.len += 10;
            memcpy(b.data + b.len, digits, (size_t)n_digits);
            b.len += n_digits;
            memcpy(b.data + b.len, "\"}", 2);
            b.len += 2;
        } else {
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(b.data, b.len);
done:
    buf_free(&b);
    return out;
}

static PyMethodDef methods[] = {
    {"image", (PyCFunction)image, METH_O, image_doc},
    {"doc", (PyCFunction)doc, METH_O, doc_doc},
    {"page", (PyCFunction)(void (*)(void))page, METH_FASTCALL, page_doc},
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL, fill_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mirror._image_wire",
    .m_doc = "An image's parsed JSON to the SDK's Image wire bytes (see mirror/image_wire.py).",
    .m_size = -1,
    .m_methods = methods,
};

static int intern(PyObject **key, const char *name) {
    *key = PyUnicode_InternFromString(name);
    return *key == NULL ? FAIL : OK;
}

PyMODINIT_FUNC PyInit__image_wire(void) {
    if (intern(&K_ID, "id") || intern(&K_NAME, "name") || intern(&K_DIGEST, "digest") ||
        intern(&K_COMPRESSED_SIZE, "compressedSize") || intern(&K_CONFIG, "config") ||
        intern(&K_LAYERS, "layers") || intern(&K_TAGS, "tags") ||
        intern(&K_CREATED_AT, "createdAt") || intern(&K_SIZE, "size") ||
        intern(&K_URLS, "urls")) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    /* The tags this module writes, by the names mirror/image_wire.py gives them. */
    PyObject *tags = Py_BuildValue(
        "{sisisisisisisisisisisisisisisisi}", "IMAGE_ID", IMAGE_ID, "IMAGE_NAME", IMAGE_NAME,
        "IMAGE_DIGEST", IMAGE_DIGEST, "IMAGE_SIZE", IMAGE_SIZE, "IMAGE_CONFIG", IMAGE_CONFIG,
        "IMAGE_LAYERS", IMAGE_LAYERS, "IMAGE_TAGS", IMAGE_TAGS, "IMAGE_CREATED", IMAGE_CREATED,
        "BLOB_ID", BLOB_ID, "BLOB_DIGEST", BLOB_DIGEST, "BLOB_SIZE", BLOB_SIZE, "BLOB_URLS",
        BLOB_URLS, "SECONDS", SECONDS, "NANOS", NANOS, "PAGE_IMAGES", PAGE_IMAGES, "PAGE_TOKEN",
        PAGE_TOKEN);
    if (tags == NULL || PyModule_AddObject(module, "TAGS", tags) < 0) {
        Py_XDECREF(tags);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
