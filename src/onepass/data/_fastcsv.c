/* The fast path of the CSV reader: a block of whole lines of plain decimal numbers into float32 arrays.

Only the common case is handled here: fields that are plain decimal numbers ([+-]digits[.digits][e[+-]digits]),
with spaces or tabs around them trimmed (as pyarrow trims them), no quotes, lines ending in \n or \r\n, empty
lines skipped. Anything else, and any number whose
float32 value this code cannot be sure to round correctly, makes parse_block return -1, and the caller parses
the block with pyarrow instead (which also finds and names bad records). So a value that comes out of here is
the correctly rounded float32 of its text, the value pyarrow gives; what is not certain is never guessed.

Correct rounding.  A number is m x 10^e with m the (at most 19) significant digits. m and the power of ten are
converted to double and multiplied (one to three roundings, each at most half a double ulp, so the double is
within 4 double ulps of the exact value); rounding that double to float32 is then correct unless it lies within
those few ulps of a point halfway between two float32 values, which the low 29 bits of the double tell. Those
cases (about one number in 10^7), subnormal float32 results and numbers of more than 19 digits go to pyarrow.

The GIL is released while parsing, so blocks parse in parallel on the reader's threads.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <float.h>

enum { UNUSED = -3, WEIGHT = -2, LABEL = -1 };

static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
/* The doubles nearest to 10^-k: each within half an ulp, as the guard below allows. */
static const double INV10[23] = {1e-0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11,
                                 1e-12, 1e-13, 1e-14, 1e-15, 1e-16, 1e-17, 1e-18, 1e-19, 1e-20, 1e-21, 1e-22};

/* m x 10^e as a double within a few ulps, for |e| <= 66. */
static double scale(double m, int e) {
    while (e > 22) { m *= 1e22; e -= 22; }
    while (e < -22) { m *= 1e-22; e += 22; }
    return e >= 0 ? m * POW10[e] : m * INV10[-e];
}

#define DIGIT(c) ((unsigned)((c) - '0') < 10)

/* Parse one number at *pp (before end) into *out; 0 when the text is not a plain number this code is sure of.
   On success *pp points just past the number. */
static int parse_number(const char **pp, const char *end, float *out) {
    const char *p = *pp;
    int negative = 0;
    if (p < end && (*p == '+' || *p == '-')) {
        negative = *p == '-';
        p++;
    }
    uint64_t m = 0;
    int exp10 = 0;
    const char *first = p, *sig;
    while (p < end && *p == '0') p++;  /* leading zeros are not significant */
    sig = p;
    while (p < end && DIGIT(*p)) m = m * 10 + (uint64_t)(*p++ - '0');
    int digits = (int)(p - sig), any = p > first;
    if (p < end && *p == '.') {
        p++;
        const char *frac = p;
        if (!m) {  /* 0.000ddd: the zeros after the point scale, they are not digits */
            while (p < end && *p == '0') p++;
            exp10 -= (int)(p - frac);
        }
        const char *fsig = p;
        while (p < end && DIGIT(*p)) m = m * 10 + (uint64_t)(*p++ - '0');
        digits += (int)(p - fsig);
        exp10 -= (int)(p - fsig);
        any |= p > frac;
    }
    if (!any || digits > 19) return 0;  /* no digit; or more than m can hold exactly */
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0, e = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        const char *edigits = p;
        while (p < end && DIGIT(*p)) {
            if (e < 100000) e = e * 10 + (*p - '0');
            p++;
        }
        if (p == edigits) return 0;
        exp10 += eneg ? -e : e;
    }
    *pp = p;
    if (m == 0) {
        *out = negative ? -0.0f : 0.0f;
        return 1;
    }
    if (exp10 < -66 || exp10 > 66) return 0;
    double d = scale((double)m, exp10);
    if (d < FLT_MIN) return 0;  /* a subnormal float32: rounded at another bit */
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    int64_t off = (int64_t)(bits & 0x1FFFFFFF) - 0x10000000;  /* distance from a float32 halfway point */
    if (off >= -8 && off <= 8) return 0;
    float f = (float)d;
    if (isinf(f)) return 0;  /* beyond float32: pyarrow's path names it */
    *out = negative ? -f : f;
    return 1;
}

/* Returns the number of records, or -1 when the block must go to the general parser. */
static Py_ssize_t parse(const char *p, const char *end, const int32_t *targets, Py_ssize_t ncols, char delimiter,
                        float *x, Py_ssize_t nx, float *y, float *w, Py_ssize_t capacity) {
    Py_ssize_t rows = 0;
    while (p < end) {
        if (*p == '\n') { p++; continue; }  /* empty lines hold no record */
        if (*p == '\r' && p + 1 < end && p[1] == '\n') { p += 2; continue; }
        if (rows == capacity) return -1;
        for (Py_ssize_t col = 0; col < ncols; col++) {
            int32_t t = targets[col];
            if (t == UNUSED) {  /* need not be a number; quotes would need the general parser */
                while (p < end && *p != delimiter && *p != '\n' && *p != '\r') {
                    if (*p == '"') return -1;
                    p++;
                }
            } else {
                float v;
                while (p < end && (*p == ' ' || (*p == '\t' && delimiter != '\t'))) p++;  /* pyarrow trims these */
                if (!parse_number(&p, end, &v)) return -1;
                while (p < end && (*p == ' ' || (*p == '\t' && delimiter != '\t'))) p++;
                if (t >= 0) x[rows * nx + t] = v;
                else if (t == LABEL) y[rows] = v;
                else w[rows] = v;
            }
            if (col + 1 < ncols) {
                if (p >= end || *p != delimiter) return -1;
                p++;
            } else if (p < end) {
                if (*p == '\n') p++;
                else if (*p == '\r' && p + 1 < end && p[1] == '\n') p += 2;
                else return -1;
            }
        }
        rows++;
    }
    return rows;
}

static int writable(PyObject *obj, Py_buffer *view, Py_ssize_t need, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return 0;
    if (view->len < need) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd needed", what, view->len, need);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

static PyObject *parse_block(PyObject *self, PyObject *args) {
    Py_buffer block, targets, xb, yb = {0}, wb = {0};
    PyObject *xo, *yo, *wo;
    Py_ssize_t nx, capacity;
    int delimiter;
    if (!PyArg_ParseTuple(args, "y*y*COnOOn", &block, &targets, &delimiter, &xo, &nx, &yo, &wo, &capacity))
        return NULL;
    Py_ssize_t result = -1;
    int ok = 0, has_y = yo != Py_None, has_w = wo != Py_None;
    if (targets.len % 4) {
        PyErr_SetString(PyExc_ValueError, "targets must be int32");
        goto done_args;
    }
    if (!writable(xo, &xb, capacity * nx * 4, "x")) goto done_args;
    if (has_y && !writable(yo, &yb, capacity * 4, "y")) goto done_x;
    if (has_w && !writable(wo, &wb, capacity * 4, "w")) goto done_y;
    Py_ssize_t ncols = targets.len / 4;
    const int32_t *t = (const int32_t *)targets.buf;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (t[i] >= nx || t[i] < UNUSED || (t[i] == LABEL && !has_y) || (t[i] == WEIGHT && !has_w)) {
            PyErr_Format(PyExc_ValueError, "column %zd has no place to go", i);
            goto done_w;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    result = parse((const char *)block.buf, (const char *)block.buf + block.len, t, ncols, (char)delimiter,
                   (float *)xb.buf, nx, has_y ? (float *)yb.buf : NULL, has_w ? (float *)wb.buf : NULL,
                   capacity);
    Py_END_ALLOW_THREADS
    ok = 1;
done_w:
    if (has_w) PyBuffer_Release(&wb);
done_y:
    if (has_y) PyBuffer_Release(&yb);
done_x:
    PyBuffer_Release(&xb);
done_args:
    PyBuffer_Release(&targets);
    PyBuffer_Release(&block);
    return ok ? PyLong_FromSsize_t(result) : NULL;
}

static PyMethodDef methods[] = {
    {"parse_block", parse_block, METH_VARARGS,
     "parse_block(block, targets, delimiter, x, nx, y, w, capacity) -> records, or -1 for the general parser.\n\n"
     "targets: int32 per column: its place in a row of x (>= 0), -1 the label (into y), -2 the weight (into w), "
     "-3 not taken. x: writable float32 (capacity, nx); y, w: writable float32 (capacity,) or None."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastcsv",
                                    "The CSV reader's fast path for plain decimal numbers.", -1, methods};

PyMODINIT_FUNC PyInit__fastcsv(void) { return PyModule_Create(&module); }
