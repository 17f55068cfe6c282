/*
 * FastCDC cut points with a caller-supplied gear table (dockyard.agent.vault._cdc).
 *
 * The gear table is derived from the repository key, so where chunks end says nothing
 * about the content to someone without the key. The scan releases the GIL, so several
 * files (or the hashing and compression of earlier chunks) proceed on other cores.
 *
 * Cut points follow FastCDC (Xia et al., 2016/2020): skip the minimum size, then look for
 * a gear hash whose masked bits are zero, with a harder mask before the target average
 * and an easier one after it (normalised chunking), and cut at the maximum size at last.
 * The masks take the hash's top bits, which depend on the last 64 bytes of input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint64_t top_mask(int bits) {
    if (bits <= 0) return 0;
    if (bits >= 64) return ~(uint64_t)0;
    return (~(uint64_t)0) << (64 - bits);
}

/* The first index at or after i (and before end) whose byte is not zero; end if none. */
static Py_ssize_t zeros_end(const uint8_t *buf, Py_ssize_t i, Py_ssize_t end) {
    while (i < end && (i & 7)) {
        if (buf[i]) return i;
        i++;
    }
    for (; i + 8 <= end; i += 8) {
        uint64_t word;
        memcpy(&word, buf + i, 8);
        if (word) break;
    }
    while (i < end && !buf[i]) i++;
    return i;
}

/* Length of the next chunk of buf[0:n]; n when no cut point lies before it.
 *
 * Zero runs (most of a VM disk or a filesystem image) are skipped, not hashed: over zero
 * bytes the gear hash reaches a fixed point, hz = -gear[0] (then (hz << 1) + gear[0] is
 * hz again), within 64 bytes. Once h is hz, the hash stays hz for as long as the zeros
 * last, so when hz passes neither mask no cut can fall inside the run and the scan jumps
 * to its end with h unchanged: the cut points are exactly those of the byte-by-byte scan.
 * (mask_s holds every bit of mask_l, so hz failing mask_l fails both.) */
static Py_ssize_t next_cut(const uint8_t *buf, Py_ssize_t n, const uint64_t *gear,
                           Py_ssize_t min_size, Py_ssize_t avg_size, Py_ssize_t max_size,
                           uint64_t mask_s, uint64_t mask_l) {
    if (n <= min_size) return n;
    if (n > max_size) n = max_size;
    Py_ssize_t barrier = avg_size < n ? avg_size : n;
    const uint64_t hz = (uint64_t)0 - gear[0];
    const int skip = (hz & mask_l) != 0;
    uint64_t h = 0;
    Py_ssize_t i = min_size;
    /* The fixed point is looked for once every 64 bytes, not at each byte: a test in the
     * inner loop halved the scan of data without zeros. */
    while (i < barrier) {
        Py_ssize_t stop = barrier - i > 64 ? i + 64 : barrier;
        for (; i < stop; i++) {
            h = (h << 1) + gear[buf[i]];
            if (!(h & mask_s)) return i + 1;
        }
        if (skip && h == hz && i < barrier && !buf[i]) i = zeros_end(buf, i, barrier);
    }
    while (i < n) {
        Py_ssize_t stop = n - i > 64 ? i + 64 : n;
        for (; i < stop; i++) {
            h = (h << 1) + gear[buf[i]];
            if (!(h & mask_l)) return i + 1;
        }
        if (skip && h == hz && i < n && !buf[i]) i = zeros_end(buf, i, n);
    }
    return n;
}

static PyObject *cuts(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data", "gear", "min_size", "avg_size", "max_size",
                             "normalization", "final", NULL};
    Py_buffer data, gear;
    Py_ssize_t min_size, avg_size, max_size;
    int level = 2, final = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*nnn|ip", kwlist, &data, &gear,
                                     &min_size, &avg_size, &max_size, &level, &final))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t *ends = NULL;
    if (gear.len != 256 * (Py_ssize_t)sizeof(uint64_t)) {
        PyErr_SetString(PyExc_ValueError, "the gear table is 256 little-endian uint64 values");
        goto done;
    }
    if (!(64 <= min_size && min_size < avg_size && avg_size < max_size) || level < 0 || level > 3) {
        PyErr_SetString(PyExc_ValueError, "sizes must satisfy 64 <= min < avg < max; level 0..3");
        goto done;
    }
    uint64_t table[256];
    memcpy(table, gear.buf, sizeof(table));  /* the values are little-endian on the wire */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (int k = 0; k < 256; k++) table[k] = __builtin_bswap64(table[k]);
#endif
    int bits = 0;
    while (((Py_ssize_t)1 << (bits + 1)) <= avg_size) bits++;
    uint64_t mask_s = top_mask(bits + level), mask_l = top_mask(bits - level);

    const uint8_t *buf = (const uint8_t *)data.buf;
    Py_ssize_t n = data.len, count = 0, capacity = n / min_size + 2;
    ends = PyMem_Malloc(sizeof(Py_ssize_t) * capacity);
    if (ends == NULL) { PyErr_NoMemory(); goto done; }

    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t pos = 0;
    while (pos < n) {
        Py_ssize_t rest = n - pos;
        Py_ssize_t len = next_cut(buf + pos, rest, table, min_size, avg_size, max_size,
                                  mask_s, mask_l);
        /* A chunk that runs to the end of the buffer is only final at the end of input. */
        if (len == rest && !final && rest < max_size) break;
        pos += len;
        ends[count++] = pos;
    }
    Py_END_ALLOW_THREADS

    out = PyList_New(count);
    if (out == NULL) goto done;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *v = PyLong_FromSsize_t(ends[k]);
        if (v == NULL) { Py_CLEAR(out); goto done; }
        PyList_SET_ITEM(out, k, v);
    }
done:
    PyMem_Free(ends);
    PyBuffer_Release(&data);
    PyBuffer_Release(&gear);
    return out;
}

/* Whether every byte of a buffer is zero: a store recognises a zero chunk by this (at
 * memory speed, stopping at the first other byte) instead of hashing it, and a chunk of
 * data stops at once. */
static PyObject *all_zero(PyObject *self, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t end;
    Py_BEGIN_ALLOW_THREADS
    end = zeros_end((const uint8_t *)data.buf, 0, data.len);
    Py_END_ALLOW_THREADS
    int zero = end == data.len;
    PyBuffer_Release(&data);
    return PyBool_FromLong(zero);
}

/* (start, end) pairs of the parts of data[start:] that are not whole blocks of zeros,
 * blocks counted from `start`: what a sparse restore writes. In C with the GIL released
 * because a restore's writers call it on every run: in Python each zero-led block was
 * copied out under the GIL to be compared. */
static PyObject *extents(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t start, block;
    if (!PyArg_ParseTuple(args, "y*nn", &data, &start, &block)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t *spans = NULL, count = 0;
    const Py_ssize_t n = data.len;
    if (block <= 0 || start < 0) {
        PyErr_SetString(PyExc_ValueError, "block must be positive and start not negative");
        goto done;
    }
    spans = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * ((n - start) / block + 2));
    if (spans == NULL) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *buf = (const uint8_t *)data.buf;
    Py_ssize_t begun = -1;
    for (Py_ssize_t i = start; i < n; i += block) {
        Py_ssize_t j = n - i > block ? i + block : n;
        int hole = j - i == block && zeros_end(buf, i, j) == j;
        if (hole && begun >= 0) {
            spans[count++] = begun;
            spans[count++] = i;
            begun = -1;
        } else if (!hole && begun < 0) {
            begun = i;
        }
    }
    if (begun >= 0) {
        spans[count++] = begun;
        spans[count++] = n;
    }
    Py_END_ALLOW_THREADS
    out = PyList_New(count / 2);
    if (out == NULL) goto done;
    for (Py_ssize_t k = 0; k < count / 2; k++) {
        PyObject *pair = Py_BuildValue("(nn)", spans[2 * k], spans[2 * k + 1]);
        if (pair == NULL) { Py_CLEAR(out); goto done; }
        PyList_SET_ITEM(out, k, pair);
    }
done:
    PyMem_Free(spans);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"extents", extents, METH_VARARGS,
     "extents(data, start, block)\n(start, end) of the parts of data[start:] that are not\n"
     "whole blocks of zeros, blocks counted from start."},
    {"all_zero", all_zero, METH_O, "all_zero(data)\nWhether every byte of `data` is zero."},
    {"cuts", (PyCFunction)(void (*)(void))cuts, METH_VARARGS | METH_KEYWORDS,
     "cuts(data, gear, min_size, avg_size, max_size, normalization=2, final=False)\n"
     "End offsets of the chunks that `data` completes. Without `final`, a trailing piece\n"
     "shorter than max_size that has no cut point is left for the next call."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cdc",
                                    "FastCDC cut points with a keyed gear table.", -1, methods};

PyMODINIT_FUNC PyInit__cdc(void) { return PyModule_Create(&module); }
