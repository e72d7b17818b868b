/* The LibSVM reader's fast path for clean blocks (data/libsvm.py): `label idx:val idx:val ...` lines, one space
between fields, indices plain integers increasing along a line and within the width, values and labels plain
numbers. Anything else (comments, qid, tabs, runs of spaces, blank lines, exponents beyond the fast rule, a bad
index) returns -1 and the block goes to the NumPy/pyarrow path, which reads it the same way or names the bad line.

Numbers: a decimal of at most 15 significant digits and at most 22 after the point is m / 10^k with m and 10^k
exact doubles, so one division rounds it correctly (Clinger's fast path, as fast_float and pyarrow use); any other
number goes through strtod, also correctly rounded. Either way the float64 value is pyarrow's, and the float32
cast the same as NumPy's astype: the same records, bit for bit, as the general path.

The GIL is released while parsing, so blocks parse on the reader's thread while the trainer runs.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* The number that starts at p and ends at a space, colon, line end or `stop`: its value in *out, and its end (or
   NULL when it is not a plain number). */
static const char *number(const char *p, const char *stop, double *out) {
    const char *s = p;
    int neg = 0;
    if (p < stop && (*p == '-' || *p == '+')) neg = *p++ == '-';
    uint64_t m = 0;
    int digits = 0, frac = 0, any = 0;
    while (p < stop && is_digit(*p)) {
        if (m || *p != '0') digits++;
        m = m * 10 + (uint64_t)(*p++ - '0');
        any = 1;
        if (digits > 15) break;
    }
    if (digits <= 15 && p < stop && *p == '.') {
        p++;
        while (p < stop && is_digit(*p)) {
            if (m || *p != '0') digits++;
            m = m * 10 + (uint64_t)(*p++ - '0');
            frac++;
            any = 1;
            if (digits > 15) break;
        }
    }
    if (any && digits <= 15 && frac <= 22 && (p == stop || *p == ' ' || *p == ':' || *p == '\n')) {
        double v = (double)m / POW10[frac];
        *out = neg ? -v : v;
        return p;
    }
    /* the general rule: strtod, over a plain token only (digits, sign, point, exponent) */
    const char *q = s;
    while (q < stop && (is_digit(*q) || *q == '.' || *q == '-' || *q == '+' || *q == 'e' || *q == 'E')) q++;
    if (q == s || (q < stop && *q != ' ' && *q != ':' && *q != '\n') || q - s > 64) return NULL;
    char buf[65];
    memcpy(buf, s, (size_t)(q - s));
    buf[q - s] = 0;
    char *end;
    double v = strtod(buf, &end);
    if (end != buf + (q - s) || !isfinite(v)) return NULL;
    *out = v;
    return q;
}

/* parse(block, n_features, zero_based, indptr, index, values, labels) -> records, or -1 for the general path.
   indptr int64 (lines + 1), index int64 and values float32 (colons), labels float32 (lines): writable. */
static PyObject *parse(PyObject *self, PyObject *args) {
    Py_buffer block, ib, xb, vb, lb;
    Py_ssize_t width;
    int zero_based;
    if (!PyArg_ParseTuple(args, "y*npw*w*w*w*", &block, &width, &zero_based, &ib, &xb, &vb, &lb)) return NULL;
    int64_t *indptr = ib.buf, *index = xb.buf;
    float *values = vb.buf, *labels = lb.buf;
    Py_ssize_t max_rows = lb.len / 4, max_nnz = xb.len / 8;
    Py_ssize_t rows = 0, nnz = 0;
    int ok = ib.len >= (max_rows + 1) * 8 && vb.len >= max_nnz * 4;
    Py_BEGIN_ALLOW_THREADS
    const char *p = block.buf, *stop = p + block.len;
    if (ok) indptr[0] = 0;
    while (ok && p < stop) {
        double v;
        const char *e = number(p, stop, &v);  /* the label */
        if (!e || rows >= max_rows || !isfinite((float)v)) { ok = 0; break; }
        labels[rows] = (float)v;
        p = e;
        int64_t last = -1;
        while (p < stop && *p == ' ') {
            p++;
            int64_t j = 0;
            int nd = 0;
            while (p < stop && is_digit(*p) && nd < 18) { j = j * 10 + (*p++ - '0'); nd++; }
            if (!nd || p >= stop || *p != ':') { ok = 0; break; }
            p++;
            if (!zero_based) j -= 1;
            if (j < 0 || j >= width || j <= last || nnz >= max_nnz) { ok = 0; break; }
            e = number(p, stop, &v);
            if (!e || (e < stop && *e == ':') || !isfinite((float)v)) { ok = 0; break; }
            index[nnz] = j;
            values[nnz++] = (float)v;
            last = j;
            p = e;
        }
        if (!ok) break;
        if (p < stop) {
            if (*p != '\n') { ok = 0; break; }
            p++;
        }
        indptr[++rows] = nnz;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&block);
    PyBuffer_Release(&ib);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&lb);
    return PyLong_FromSsize_t(ok ? rows : -1);
}

/* sizes(block) -> (line ends, colons): the output sizes `parse` needs, counted without the GIL (bytes.count
   holds it: with the trainer on the other thread, 1 s of 4.5 s reading the 10^6-record stream, loaded machine). */
static PyObject *sizes(PyObject *self, PyObject *args) {
    Py_buffer block;
    if (!PyArg_ParseTuple(args, "y*", &block)) return NULL;
    Py_ssize_t lines = 0, colons = 0;
    Py_BEGIN_ALLOW_THREADS
    const char *p = block.buf;
    for (Py_ssize_t i = 0; i < block.len; i++) {
        lines += p[i] == '\n';
        colons += p[i] == ':';
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&block);
    return Py_BuildValue("nn", lines, colons);
}

static PyMethodDef methods[] = {
    {"sizes", sizes, METH_VARARGS, "sizes(block) -> (line ends, colons)."},
    {"parse", parse, METH_VARARGS,
     "parse(block, n_features, zero_based, indptr, index, values, labels) -> records, or -1 for the general path."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastsvm",
                                    "The LibSVM reader's fast path for clean blocks (see the source).", -1, methods};

PyMODINIT_FUNC PyInit__fastsvm(void) { return PyModule_Create(&module); }
