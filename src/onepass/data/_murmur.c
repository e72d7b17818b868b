/* MurmurHash3 x86_32 of `prefix + value` for every value of an Arrow string array (data/hashing.py): the hashed
categorical columns' fast path. Appleby's reference algorithm (public domain), unsigned 32-bit results, the same
as hashing.murmur3_32 (NumPy), scikit-learn's murmurhash3_32(positive=True) and mmh3.

hash_values(prefix, data, offsets, n, out, seed, trim): `offsets` are the array's n + 1 int32 offsets into
`data`; with `trim`, spaces and tabs around each value are left out (CSV fields). The GIL is released while
hashing, so the reader's threads run on.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static uint32_t murmur3_32(const uint8_t *key, size_t len, uint32_t seed) {
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    uint32_t h = seed, k;
    size_t blocks = len / 4, i;
    for (i = 0; i < blocks; i++) {
        memcpy(&k, key + 4 * i, 4);  /* little-endian, as the reference on x86 */
        k *= c1;
        k = rotl32(k, 15);
        k *= c2;
        h ^= k;
        h = rotl32(h, 13);
        h = h * 5 + 0xe6546b64;
    }
    const uint8_t *tail = key + 4 * blocks;
    k = 0;
    switch (len & 3) {
        case 3: k ^= (uint32_t)tail[2] << 16; /* fall through */
        case 2: k ^= (uint32_t)tail[1] << 8;  /* fall through */
        case 1:
            k ^= tail[0];
            k *= c1;
            k = rotl32(k, 15);
            k *= c2;
            h ^= k;
    }
    h ^= (uint32_t)len;
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

static PyObject *hash_values(PyObject *self, PyObject *args) {
    Py_buffer prefix, data, offsets, out;
    Py_ssize_t n;
    unsigned int seed;
    int trim;
    if (!PyArg_ParseTuple(args, "y*y*y*nw*Ip", &prefix, &data, &offsets, &n, &out, &seed, &trim)) return NULL;
    PyObject *result = NULL;
    if (offsets.len < (Py_ssize_t)((n + 1) * sizeof(int32_t)) || out.len < (Py_ssize_t)(n * sizeof(uint32_t))) {
        PyErr_SetString(PyExc_ValueError, "hash_values: offsets or out too short");
        goto done;
    }
    const int32_t *off = (const int32_t *)offsets.buf;
    const uint8_t *text = (const uint8_t *)data.buf;
    uint32_t *h = (uint32_t *)out.buf;
    size_t cap = 256;
    uint8_t *key = malloc(cap);
    if (key == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    memcpy(key, prefix.buf, prefix.len > 0 ? (size_t)prefix.len : 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t a = off[i], b = off[i + 1];
        if (a < 0 || b < a || b > data.len) {
            failed = 1;
            break;
        }
        if (trim) {
            while (a < b && (text[a] == ' ' || text[a] == '\t')) a++;
            while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t')) b--;
        }
        size_t len = (size_t)prefix.len + (size_t)(b - a);
        if (len > cap) {
            while (cap < len) cap *= 2;
            uint8_t *grown = realloc(key, cap);
            if (grown == NULL) {
                failed = 2;
                break;
            }
            key = grown;
        }
        memcpy(key + prefix.len, text + a, (size_t)(b - a));
        h[i] = murmur3_32(key, len, (uint32_t)seed);
    }
    Py_END_ALLOW_THREADS
    free(key);
    if (failed == 1) {
        PyErr_SetString(PyExc_ValueError, "hash_values: offsets out of range");
    } else if (failed == 2) {
        PyErr_NoMemory();
    } else {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"hash_values", hash_values, METH_VARARGS,
     "hash_values(prefix, data, offsets, n, out, seed, trim): MurmurHash3 x86_32 of prefix + each value."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_murmur",
                                    "MurmurHash3 x86_32 of categorical values (see the source).", -1, methods};

PyMODINIT_FUNC PyInit__murmur(void) { return PyModule_Create(&module); }
