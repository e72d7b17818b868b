/* The linear learner's sparse mini-batch in one pass over its entries (algorithms/linear.py, `_apply`).

The torch path gathers the rows of W, m1 and m2 of the batch's distinct columns into new tensors (after sorting the
columns), runs about twenty element-wise passes of the optimizer over them, and scatters the three back: on the
10^6-wide benchmark stream, 1,000 records x 20 entries at 32 models, the update spent most of its time in those
gathers, scatters and passes, and at one model in the per-call overhead of ~60 small torch operations.

Here each distinct column's rows are read once and written once:
  1. entries in order: a column's first entry opens a slot (no sort: `place` maps a column to its slot), and
     G[r] * value is added to the slot's gradient row (the order index_add_ adds them in);
  2. per slot: g += wd w + l1 sign(w), then the column's optimizer (sgd with momentum, adam, rmsprop) updates
     m1, m2 and w in place, with the torch path's formulas;
  3. `place` is cleared again for the next batch.
`scores` is X W for a CSR X (the bias is added by the caller). The GIL is released, so the reader's threads parse
the next block meanwhile. Deterministic: the same batch and state give the same bits (resume stays exact).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Rows are visited in random order: each is a cache (and TLB) miss, and a loop that waits for one row before it
   asks for the next is bound by memory latency, not bandwidth. Asking for the rows PREFETCH_AHEAD visits ahead
   keeps several misses in flight. */
#define PREFETCH_AHEAD 8

static inline void prefetch_row(const float *row, Py_ssize_t mc, int write) {
    for (Py_ssize_t i = 0; i < mc; i += 16) {  /* one 64-byte line at a time */
        if (write) __builtin_prefetch(row + i, 1, 0);
        else __builtin_prefetch(row + i, 0, 0);
    }
}

static int view(PyObject *obj, Py_buffer *v, Py_ssize_t need, int writable, const char *what) {
    if (PyObject_GetBuffer(obj, v, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return 0;
    if (v->len < need) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, %zd needed", what, v->len, need);
        PyBuffer_Release(v);
        return 0;
    }
    return 1;
}

/* scores(crow, col, val, W, n_cols, out): out (n, n_cols) = X W, X the CSR matrix (int64 crow, col; float32). */
static PyObject *scores(PyObject *self, PyObject *args) {
    PyObject *o[5];
    Py_ssize_t mc, n, nnz, d;
    if (!PyArg_ParseTuple(args, "OOOOnnnnO", &o[0], &o[1], &o[2], &o[3], &mc, &n, &nnz, &d, &o[4])) return NULL;
    Py_buffer b[5];
    Py_ssize_t need[5] = {(n + 1) * 8, nnz * 8, nnz * 4, d * mc * 4, n * mc * 4};
    const char *names[5] = {"crow", "col", "val", "W", "out"};
    int got = 0;
    for (; got < 5; got++)
        if (!view(o[got], &b[got], need[got], got == 4, names[got])) break;
    if (got == 5) {
        const int64_t *crow = b[0].buf, *col = b[1].buf;
        const float *val = b[2].buf, *W = b[3].buf;
        float *out = b[4].buf;
        int bad = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t e = 0; e < nnz; e++) bad |= col[e] < 0 || col[e] >= d;
        for (Py_ssize_t r = 0; r < n && !bad; r++) {
            float *s = out + r * mc;
            memset(s, 0, mc * sizeof(float));
            for (int64_t e = crow[r]; e < crow[r + 1]; e++) {
                if (e + PREFETCH_AHEAD < nnz) prefetch_row(W + col[e + PREFETCH_AHEAD] * mc, mc, 0);
                const float *w = W + col[e] * mc;
                float v = val[e];
                for (Py_ssize_t c = 0; c < mc; c++) s[c] += v * w[c];
            }
        }
        Py_END_ALLOW_THREADS
        if (bad) PyErr_SetString(PyExc_IndexError, "a column index is out of range");
    }
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    if (got < 5 || PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

enum { SGD = 0, ADAM = 1, RMSPROP = 2 };

/* step(crow, col, val, G, W, m1, m2, lr, wd, l1, kind, place, slots, gacc, n_cols, n, nnz, d,
        momentum, b1, b2, corr1, corr2) -> distinct columns updated.
   G (n, n_cols) the loss gradient per record; W, m1, m2 (d, n_cols) updated in place; lr, wd, l1 float32 and
   kind int8 (0 sgd, 1 adam, 2 rmsprop) per column of W; place int32 (d,) all zero (left so); slots int64 (nnz,)
   and gacc float32 (nnz, n_cols) scratch. corr1 = 1 - b1^t, corr2 = 1 - b2^t. */
static PyObject *step(PyObject *self, PyObject *args) {
    PyObject *o[14];
    Py_ssize_t mc, n, nnz, d;
    double momentum, b1, b2, corr1, corr2;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOnnnnddddd", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                          &o[8], &o[9], &o[10], &o[11], &o[12], &o[13], &mc, &n, &nnz, &d, &momentum, &b1, &b2,
                          &corr1, &corr2))
        return NULL;
    Py_buffer b[14];
    Py_ssize_t need[14] = {(n + 1) * 8, nnz * 8, nnz * 4, n * mc * 4, d * mc * 4, d * mc * 4, d * mc * 4,
                           mc * 4, mc * 4, mc * 4, mc, d * 4, nnz * 8, nnz * mc * 4};
    const char *names[14] = {"crow", "col", "val", "G", "W", "m1", "m2", "lr", "wd", "l1", "kind", "place",
                             "slots", "gacc"};
    int got = 0;
    for (; got < 14; got++) {
        int writable = (got >= 4 && got <= 6) || got >= 11;
        if (!view(o[got], &b[got], need[got], writable, names[got])) break;
    }
    Py_ssize_t used = 0;
    if (got == 14) {
        const int64_t *crow = b[0].buf, *col = b[1].buf;
        const float *val = b[2].buf, *G = b[3].buf, *lr = b[7].buf, *wd = b[8].buf, *l1 = b[9].buf;
        float *W = b[4].buf, *M1 = b[5].buf, *M2 = b[6].buf, *gacc = b[13].buf;
        const int8_t *kind = b[10].buf;
        int32_t *place = b[11].buf;
        int64_t *slots = b[12].buf;
        const float fm = (float)momentum, fb1 = (float)b1, fb2 = (float)b2, c1 = (float)corr1, c2 = (float)corr2;
        const float eps = 1e-8f;
        int bad = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t e = 0; e < nnz; e++) bad |= col[e] < 0 || col[e] >= d;
        for (Py_ssize_t r = 0; r < n && !bad; r++) {
            const float *g = G + r * mc;
            for (int64_t e = crow[r]; e < crow[r + 1]; e++) {
                if (e + PREFETCH_AHEAD < nnz) __builtin_prefetch(place + col[e + PREFETCH_AHEAD], 1, 0);
                int64_t j = col[e];
                float *acc;
                if (place[j] == 0) {
                    slots[used] = j;
                    place[j] = (int32_t)(++used);
                    acc = gacc + (used - 1) * mc;
                    memset(acc, 0, mc * sizeof(float));
                } else {
                    acc = gacc + (Py_ssize_t)(place[j] - 1) * mc;
                }
                float v = val[e];
                for (Py_ssize_t c = 0; c < mc; c++) acc[c] += g[c] * v;
            }
        }
        for (Py_ssize_t s = 0; s < used; s++) {
            if (s + PREFETCH_AHEAD < used) {
                int64_t ahead = slots[s + PREFETCH_AHEAD] * mc;
                prefetch_row(W + ahead, mc, 1);
                prefetch_row(M1 + ahead, mc, 1);
                prefetch_row(M2 + ahead, mc, 1);
            }
            int64_t j = slots[s];
            place[j] = 0;
            float *w = W + j * mc, *m1 = M1 + j * mc, *m2 = M2 + j * mc;
            const float *acc = gacc + s * mc;
            for (Py_ssize_t c = 0; c < mc; c++) {
                float p = w[c];
                float sign = (p > 0.0f) - (p < 0.0f);
                float gr = acc[c] + p * wd[c] + sign * l1[c];
                if (kind[c] == SGD) {            /* v = mu v + g; p -= lr v */
                    m1[c] = m1[c] * fm + gr;
                    w[c] = p - m1[c] * lr[c];
                } else if (kind[c] == ADAM) {    /* p -= lr m1^ / (sqrt(m2^) + eps) */
                    m1[c] = m1[c] * fb1 + gr * (1.0f - fb1);
                    m2[c] = m2[c] * fb2 + gr * gr * (1.0f - fb2);
                    w[c] = p - (m1[c] / (sqrtf(m2[c] / c2) + eps)) * (lr[c] / c1);
                } else {                         /* rmsprop: p -= lr g / sqrt(E[g^2]) */
                    m2[c] = m2[c] * fb2 + gr * gr * (1.0f - fb2);
                    w[c] = p - (gr / (sqrtf(m2[c] / c2) + eps)) * lr[c];
                }
            }
        }
        Py_END_ALLOW_THREADS
        if (bad) PyErr_SetString(PyExc_IndexError, "a column index is out of range");
    }
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    if (got < 14 || PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(used);
}

static PyMethodDef methods[] = {
    {"scores", scores, METH_VARARGS, "scores(crow, col, val, W, n_cols, n, nnz, d, out): out = X W (CSR X)."},
    {"step", step, METH_VARARGS,
     "step(crow, col, val, G, W, m1, m2, lr, wd, l1, kind, place, slots, gacc, n_cols, n, nnz, d, momentum, b1, "
     "b2, corr1, corr2) -> distinct columns: one optimizer step of the rows of the batch's columns, in place."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sparsestep",
                                    "The linear learner's sparse update in one pass (see the source).", -1, methods};

PyMODINIT_FUNC PyInit__sparsestep(void) { return PyModule_Create(&module); }
