/*
 * initrecipe.rng.torch._mt19937: jump-ahead for torch's CPU generator (mt19937), specified in
 * schema/TORCH_RNG.md.
 *
 * mt19937's untempered words x_1, x_2, ... satisfy a linear recurrence over GF(2) whose
 * characteristic polynomial P has degree 19937 and only 135 terms (_mt19937_constants.h, made by
 * tools/make_mt19937_constants.py).  If x^J mod P = sum c_i x^i, then x_{k+J} = sum c_i x_{k+i}
 * for every k >= 1, so the window of 624 words that torch keeps as its state can be moved J words
 * ahead by summing the windows that the first 19937 single-word steps produce (Horner's rule in
 * the shift operator).  Computing x^J mod P takes log2(J) squarings modulo P, which is cheap
 * because P is sparse; applying it takes 19937 word steps and about 10^4 window XORs.  Together,
 * about a millisecond for any J, against about a nanosecond per word for stepping.
 *
 * Functions (all release the GIL while they compute):
 *   jump_polynomial(j) -> bytes      x^j mod P, 312 little-endian uint64 words (bit i = coefficient of x^i)
 *   advance_window(window, twists, polynomial=None) -> bytes
 *       window: the 624 uint32 words torch's state holds (little-endian bytes); returns the window
 *       `twists` regenerations later.  With polynomial=None the twists are run one by one (fast for
 *       a few); otherwise `polynomial` must be jump_polynomial(624 * twists - 1).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "_mt19937_constants.h"

#define MT_N 624
#define MT_M 397
#define MT_DEGREE 19937
#define MT_MATRIX_A 0x9908b0dfU
#define MT_UPPER 0x80000000U
#define MT_LOWER 0x7fffffffU
#define POLY_WORDS 312               /* 64-bit words of a polynomial of degree < 19937 (19968 bits) */
#define WIDE_WORDS (2 * POLY_WORDS)  /* a square before reduction: degree <= 2 * 19936 */
#define POLY_BYTES (POLY_WORDS * 8)
#define WINDOW_BYTES (MT_N * 4)

typedef struct {
    uint64_t w[POLY_WORDS];
} poly_t;

/* ------------------------------------------------------------------ polynomials modulo P */

/* XOR the 64-bit chunk `chunk` into `a` at bit position `pos` (pos may be negative when the chunk's
 * low -pos bits are zero). */
static inline void xor_chunk(uint64_t *a, int64_t pos, uint64_t chunk) {
    if (pos < 0) {
        a[0] ^= chunk >> (-pos);
        return;
    }
    int64_t word = pos >> 6;
    int shift = (int)(pos & 63);
    a[word] ^= chunk << shift;
    if (shift) {
        a[word + 1] ^= chunk >> (64 - shift);
    }
}

/* Reduce `wide` (WIDE_WORDS + 1 words, degree < 2 * 19937) modulo P into `out`.  Works from the top
 * word down: the bits of a word at or above x^19937 are replaced by the same bits times
 * (P - x^19937), whose highest exponent is 19314, so they land at least 623 bits lower, below the
 * word being processed. */
static void reduce(uint64_t *wide, poly_t *out) {
    const int top_word = MT_DEGREE / 64; /* 311: holds bit 19937 at position 33 */
    const int top_bit = MT_DEGREE % 64;
    for (int w = WIDE_WORDS; w >= top_word; w--) {
        uint64_t chunk = wide[w];
        if (w == top_word) {
            chunk &= ~((UINT64_C(1) << top_bit) - 1);
        }
        if (!chunk) {
            continue;
        }
        wide[w] ^= chunk;
        int64_t offset = (int64_t)w * 64 - MT_DEGREE;
        for (int t = 0; t < MT_TAP_COUNT; t++) {
            xor_chunk(wide, offset + MT_TAPS[t], chunk);
        }
    }
    memcpy(out->w, wide, POLY_BYTES);
}

/* The 64-bit word whose even bits are the bits of x (x spread out: the square of a GF(2) polynomial). */
static inline uint64_t spread32(uint32_t x) {
    uint64_t v = x;
    v = (v | (v << 16)) & UINT64_C(0x0000FFFF0000FFFF);
    v = (v | (v << 8)) & UINT64_C(0x00FF00FF00FF00FF);
    v = (v | (v << 4)) & UINT64_C(0x0F0F0F0F0F0F0F0F);
    v = (v | (v << 2)) & UINT64_C(0x3333333333333333);
    v = (v | (v << 1)) & UINT64_C(0x5555555555555555);
    return v;
}

static void square_mod(poly_t *a) {
    uint64_t wide[WIDE_WORDS + 1];
    for (int i = 0; i < POLY_WORDS; i++) {
        wide[2 * i] = spread32((uint32_t)a->w[i]);
        wide[2 * i + 1] = spread32((uint32_t)(a->w[i] >> 32));
    }
    wide[WIDE_WORDS] = 0;
    reduce(wide, a);
}

static void times_x_mod(poly_t *a) {
    uint64_t carry = 0;
    for (int i = 0; i < POLY_WORDS; i++) {
        uint64_t next = a->w[i] >> 63;
        a->w[i] = (a->w[i] << 1) | carry;
        carry = next;
    }
    const int top_word = MT_DEGREE / 64;
    const uint64_t top = UINT64_C(1) << (MT_DEGREE % 64);
    if (a->w[top_word] & top) {
        a->w[top_word] ^= top;
        for (int t = 0; t < MT_TAP_COUNT; t++) {
            a->w[MT_TAPS[t] >> 6] ^= UINT64_C(1) << (MT_TAPS[t] & 63);
        }
    }
}

/* x^j mod P. */
static void power_of_x(uint64_t j, poly_t *out) {
    memset(out, 0, sizeof(*out));
    int bits = 64;
    while (bits > 0 && !((j >> (bits - 1)) & 1)) {
        bits--;
    }
    /* The longest prefix of j's bits below 19937 is a monomial: no arithmetic needed for it. */
    uint64_t prefix = 0;
    int used = 0;
    while (used < bits) {
        uint64_t next = (prefix << 1) | ((j >> (bits - 1 - used)) & 1);
        if (next >= MT_DEGREE) {
            break;
        }
        prefix = next;
        used++;
    }
    out->w[prefix >> 6] = UINT64_C(1) << (prefix & 63);
    for (; used < bits; used++) {
        square_mod(out);
        if ((j >> (bits - 1 - used)) & 1) {
            times_x_mod(out);
        }
    }
}

/* ------------------------------------------------------------------ the generator's window */

static inline uint32_t twist_word(uint32_t u, uint32_t v, uint32_t m) {
    uint32_t y = (u & MT_UPPER) | (v & MT_LOWER);
    return m ^ (y >> 1) ^ ((y & 1U) ? MT_MATRIX_A : 0U);
}

/* One regeneration of the whole window, as torch's mt19937::next_state does it. */
static void twist(uint32_t *s) {
    int k = 0;
    for (; k < MT_N - MT_M; k++) {
        s[k] = twist_word(s[k], s[k + 1], s[k + MT_M]);
    }
    for (; k < MT_N - 1; k++) {
        s[k] = twist_word(s[k], s[k + 1], s[k + MT_M - MT_N]);
    }
    s[MT_N - 1] = twist_word(s[MT_N - 1], s[0], s[MT_M - 1]);
}

/* The window `j` single-word steps after `window`, j + 1 = 624 * twists, then one more step, so
 * that every word of the result is exact: sum c_i x_{k+i} gives x_{k+j} for k >= 1 only, which
 * leaves the low 31 bits of the result's first word unknown; the extra step drops that word and
 * uses only its top bit, which the sum gives exactly. */
static void jump_window(const uint32_t *window, const poly_t *c, uint32_t *out) {
    uint32_t cur[MT_N];
    uint32_t acc[MT_N];
    memcpy(cur, window, sizeof(cur));
    memset(acc, 0, sizeof(acc));
    int s = 0; /* cur[s] is the window's first word */
    for (int i = 0; i < MT_DEGREE; i++) {
        if ((c->w[i >> 6] >> (i & 63)) & 1) {
            int first = MT_N - s;
            for (int k = 0; k < first; k++) {
                acc[k] ^= cur[s + k];
            }
            for (int k = 0; k < s; k++) {
                acc[first + k] ^= cur[k];
            }
        }
        int s1 = s + 1 == MT_N ? 0 : s + 1;
        int sm = s + MT_M >= MT_N ? s + MT_M - MT_N : s + MT_M;
        cur[s] = twist_word(cur[s], cur[s1], cur[sm]);
        s = s1;
    }
    /* acc is the window starting j words later; step once more. */
    uint32_t last = twist_word(acc[0], acc[1], acc[MT_M]);
    memcpy(out, acc + 1, (MT_N - 1) * sizeof(uint32_t));
    out[MT_N - 1] = last;
}

/* ------------------------------------------------------------------ Python bindings */

static PyObject *py_jump_polynomial(PyObject *self, PyObject *args) {
    unsigned long long j;
    if (!PyArg_ParseTuple(args, "K:jump_polynomial", &j)) {
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, POLY_BYTES);
    if (result == NULL) {
        return NULL;
    }
    poly_t p;
    Py_BEGIN_ALLOW_THREADS
    power_of_x((uint64_t)j, &p);
    Py_END_ALLOW_THREADS
    memcpy(PyBytes_AS_STRING(result), p.w, POLY_BYTES);
    return result;
}

static PyObject *py_advance_window(PyObject *self, PyObject *args) {
    Py_buffer window;
    unsigned long long twists;
    PyObject *polynomial = Py_None;
    if (!PyArg_ParseTuple(args, "y*K|O:advance_window", &window, &twists, &polynomial)) {
        return NULL;
    }
    if (window.len != WINDOW_BYTES) {
        PyBuffer_Release(&window);
        PyErr_Format(PyExc_ValueError, "window must be %d bytes, got %zd", WINDOW_BYTES, window.len);
        return NULL;
    }
    uint32_t in[MT_N], out[MT_N];
    memcpy(in, window.buf, WINDOW_BYTES);
    PyBuffer_Release(&window);
    poly_t c;
    int use_polynomial = polynomial != Py_None;
    if (use_polynomial) {
        Py_buffer poly;
        if (PyObject_GetBuffer(polynomial, &poly, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        if (poly.len != POLY_BYTES || twists == 0) {
            PyBuffer_Release(&poly);
            PyErr_SetString(PyExc_ValueError, "polynomial must be jump_polynomial(624 * twists - 1), twists >= 1");
            return NULL;
        }
        memcpy(c.w, poly.buf, POLY_BYTES);
        PyBuffer_Release(&poly);
    }
    Py_BEGIN_ALLOW_THREADS
    if (use_polynomial) {
        jump_window(in, &c, out);
    } else {
        memcpy(out, in, WINDOW_BYTES);
        for (unsigned long long t = 0; t < twists; t++) {
            twist(out);
        }
    }
    Py_END_ALLOW_THREADS
    return PyBytes_FromStringAndSize((const char *)out, WINDOW_BYTES);
}

static PyMethodDef methods[] = {
    {"jump_polynomial", py_jump_polynomial, METH_VARARGS, "x^j modulo mt19937's characteristic polynomial."},
    {"advance_window", py_advance_window, METH_VARARGS, "The mt19937 window a number of regenerations later."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mt19937", "Jump-ahead for torch's CPU generator (mt19937).", -1, methods,
};

PyMODINIT_FUNC PyInit__mt19937(void) { return PyModule_Create(&module); }
