/* The active k x k Jacobian of a Jacobian SAE pair, forward and backward, per token in
 * one pass (see kernel.py for why this is hand-written and how it is built and loaded).
 *
 * Shapes (row-major, contiguous):
 *   a    (s1, dm)   A   = W_dec1 W_in            (SAE 1 latents -> MLP pre-activation)
 *   bt   (s2, dm)   B^T = (W_out W_enc2)^T       (MLP hidden -> SAE 2 latents, transposed)
 *   d    (t, dm)    phi'(pre) per token
 *   ii   (t, k1)    SAE 1's active latents per token;  oo (t, k2) SAE 2's
 *   J    (t, k2, k1)  J[t, j, i] = sum_m bt[oo[t,j], m] d[t, m] a[ii[t,i], m]
 * Backward, for G = dL/dJ (t, k2, k1), with W[j] = sum_i G[j,i] a[ii_i] and
 * V[i] = sum_j G[j,i] bt[oo_j] (rows of length dm):
 *   gd[t, m]       = sum_j W[j, m] bt[oo_j, m]
 *   gbt[oo_j, m]  += W[j, m] d[t, m]
 *   ga[ii_i, m]   += V[i, m] d[t, m]
 * Tokens are split into n_threads contiguous ranges, one per OpenMP thread; each thread
 * accumulates ga / gbt into its own slice of the (n_threads, s, dm) outputs, which the
 * caller sums. Built with -fopenmp the library links libgomp.so.1 by soname, so inside a
 * process where torch has loaded its libgomp the regions run on torch's own worker threads
 * (a separate pool, e.g. pthreads, competes with torch's spinning workers for the cores:
 * measured 1.96x against 1.62x for the whole step, benchmarks/jsae.py --threads 2). Built
 * without OpenMP (kernel.py retries without -fopenmp where the compiler lacks it) the
 * loop runs serially.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }
/* bytes of the backward's 2 (k1 + k2) row pointers, rounded up so the vectors after them
 * stay 64-byte aligned */
static size_t bwd_pointer_bytes(int64_t k1, int64_t k2) {
    return round64(sizeof(void *) * (size_t)(2 * (k1 + k2)));
}

#define DEFINE_KERNELS(T, SUF)                                                                \
typedef T V##SUF __attribute__((vector_size(32))); /* 8 float / 4 double lanes (AVX2 width) */ \
typedef struct {                                                                              \
    const T *a, *bt, *d, *g; const int64_t *ii, *oo; T *out, *gd, *ga, *gbt;                  \
    void *scratch; /* this thread's, 64-byte aligned */                                      \
    int64_t t0, t1, k1, k2, dm;                                                               \
} args_##SUF;                                                                                 \
                                                                                              \
static inline V##SUF ld_##SUF(const T *p) { V##SUF v; __builtin_memcpy(&v, p, sizeof v); return v; } \
static inline void st_##SUF(T *p, V##SUF v) { __builtin_memcpy(p, &v, sizeof v); }          \
static inline T hsum_##SUF(V##SUF v) {                                                        \
    T s = 0; for (int l = 0; l < (int)(sizeof v / sizeof(T)); l++) s += v[l]; return s;       \
}                                                                                             \
                                                                                              \
static void *fwd_range_##SUF(void *p) {                                                       \
    args_##SUF *r = (args_##SUF *)p;                                                          \
    const int64_t k1 = r->k1, k2 = r->k2, dm = r->dm, L = sizeof(V##SUF) / sizeof(T);         \
    const int64_t dv = dm - dm % L;                                                           \
    T *bd = (T *)r->scratch; /* k2 rows of bt[oo_j] * d[t] */                                 \
    for (int64_t t = r->t0; t < r->t1; t++) {                                                 \
        const T *dt = r->d + t * dm;                                                          \
        for (int64_t j = 0; j < k2; j++) {                                                    \
            const T *b = r->bt + r->oo[t * k2 + j] * dm;                                      \
            T *row = bd + j * dm;                                                             \
            for (int64_t m = 0; m < dm; m++) row[m] = b[m] * dt[m];                           \
        }                                                                                     \
        T *o = r->out + t * k2 * k1;                                                          \
        /* 2 x 4 blocks of dot products: 8 independent vector accumulators, 6 loads per    \
         * 8 FMA; a block running past k1 / k2 repeats its last row and drops the result */  \
        for (int64_t j0 = 0; j0 < k2; j0 += 2) {                                              \
            const T *b0 = bd + j0 * dm, *b1 = bd + (j0 + 1 < k2 ? j0 + 1 : j0) * dm;           \
            for (int64_t i0 = 0; i0 < k1; i0 += 4) {                                          \
                const T *ar[4];                                                               \
                for (int q = 0; q < 4; q++)                                                   \
                    ar[q] = r->a + r->ii[t * k1 + (i0 + q < k1 ? i0 + q : k1 - 1)] * dm;       \
                V##SUF c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0};                            \
                V##SUF c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0};                            \
                for (int64_t m = 0; m < dv; m += L) {                                         \
                    V##SUF x0 = ld_##SUF(b0 + m), x1 = ld_##SUF(b1 + m), y;                   \
                    y = ld_##SUF(ar[0] + m); c00 += x0 * y; c10 += x1 * y;                    \
                    y = ld_##SUF(ar[1] + m); c01 += x0 * y; c11 += x1 * y;                    \
                    y = ld_##SUF(ar[2] + m); c02 += x0 * y; c12 += x1 * y;                    \
                    y = ld_##SUF(ar[3] + m); c03 += x0 * y; c13 += x1 * y;                    \
                }                                                                             \
                T acc[2][4] = {{hsum_##SUF(c00), hsum_##SUF(c01), hsum_##SUF(c02), hsum_##SUF(c03)}, \
                               {hsum_##SUF(c10), hsum_##SUF(c11), hsum_##SUF(c12), hsum_##SUF(c13)}}; \
                for (int64_t m = dv; m < dm; m++)                                             \
                    for (int q = 0; q < 4; q++) { acc[0][q] += b0[m] * ar[q][m]; acc[1][q] += b1[m] * ar[q][m]; } \
                for (int jj = 0; jj < 2 && j0 + jj < k2; jj++)                                \
                    for (int q = 0; q < 4 && i0 + q < k1; q++) o[(j0 + jj) * k1 + i0 + q] = acc[jj][q]; \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    return NULL;                                                                              \
}                                                                                             \
                                                                                              \
static void *bwd_range_##SUF(void *p) {                                                       \
    args_##SUF *r = (args_##SUF *)p;                                                          \
    const int64_t k1 = r->k1, k2 = r->k2, dm = r->dm, L = sizeof(V##SUF) / sizeof(T);         \
    const int64_t dv = dm - dm % L;                                                           \
    /* scratch: 2 (k1 + k2) row pointers, then (64-byte aligned) one m-block of each row */ \
    const T **ar = (const T **)r->scratch, **br = ar + k1;                                    \
    T **ga = (T **)(br + k2), **gb = ga + k1;                                                 \
    V##SUF *av = (V##SUF *)(void *)((unsigned char *)r->scratch + bwd_pointer_bytes(k1, k2)), *bv = av + k1; \
    for (int64_t t = r->t0; t < r->t1; t++) {                                                 \
        const T *dt = r->d + t * dm, *gt = r->g + t * k2 * k1;                                \
        T *gdt = r->gd + t * dm;                                                              \
        for (int64_t i = 0; i < k1; i++) {                                                    \
            ar[i] = r->a + r->ii[t * k1 + i] * dm; ga[i] = r->ga + r->ii[t * k1 + i] * dm; }  \
        for (int64_t j = 0; j < k2; j++) {                                                    \
            br[j] = r->bt + r->oo[t * k2 + j] * dm; gb[j] = r->gbt + r->oo[t * k2 + j] * dm; } \
        /* one pass over m: each block of the k1 + k2 rows is loaded once, and W = G A_sel,  \
         * V = G^T B_sel are formed a vector at a time (no row-length temporaries) */        \
        for (int64_t m = 0; m < dv; m += L) {                                                 \
            V##SUF D = ld_##SUF(dt + m), gdv = {0};                                           \
            for (int64_t i = 0; i < k1; i++) av[i] = ld_##SUF(ar[i] + m);                     \
            for (int64_t j = 0; j < k2; j++) bv[j] = ld_##SUF(br[j] + m);                     \
            /* W rows in blocks of 4 j (4 independent accumulators over i), then V rows in   \
             * blocks of 4 i over j; a block past k2 / k1 repeats its last row, unused */     \
            for (int64_t j0 = 0; j0 < k2; j0 += 4) {                                          \
                const T *g0 = gt + j0 * k1, *g1 = gt + (j0 + 1 < k2 ? j0 + 1 : k2 - 1) * k1;  \
                const T *g2 = gt + (j0 + 2 < k2 ? j0 + 2 : k2 - 1) * k1;                      \
                const T *g3 = gt + (j0 + 3 < k2 ? j0 + 3 : k2 - 1) * k1;                      \
                V##SUF w[4] = {{0}, {0}, {0}, {0}};                                           \
                for (int64_t i = 0; i < k1; i++) {                                            \
                    V##SUF x = av[i];                                                         \
                    w[0] += g0[i] * x; w[1] += g1[i] * x; w[2] += g2[i] * x; w[3] += g3[i] * x; \
                }                                                                             \
                for (int64_t q = 0; q < 4 && j0 + q < k2; q++) {                              \
                    gdv += w[q] * bv[j0 + q];                                                 \
                    st_##SUF(gb[j0 + q] + m, ld_##SUF(gb[j0 + q] + m) + w[q] * D);            \
                }                                                                             \
            }                                                                                 \
            st_##SUF(gdt + m, gdv);                                                           \
            for (int64_t i0 = 0; i0 < k1; i0 += 4) {                                          \
                const int64_t i1 = i0 + 1 < k1 ? i0 + 1 : k1 - 1;                             \
                const int64_t i2 = i0 + 2 < k1 ? i0 + 2 : k1 - 1, i3 = i0 + 3 < k1 ? i0 + 3 : k1 - 1; \
                V##SUF v[4] = {{0}, {0}, {0}, {0}};                                           \
                for (int64_t j = 0; j < k2; j++) {                                            \
                    V##SUF x = bv[j]; const T *gj = gt + j * k1;                              \
                    v[0] += gj[i0] * x; v[1] += gj[i1] * x; v[2] += gj[i2] * x; v[3] += gj[i3] * x; \
                }                                                                             \
                for (int64_t q = 0; q < 4 && i0 + q < k1; q++)                                \
                    st_##SUF(ga[i0 + q] + m, ld_##SUF(ga[i0 + q] + m) + v[q] * D);            \
            }                                                                                 \
        }                                                                                     \
        for (int64_t m = dv; m < dm; m++) {                                                   \
            T gdm = 0;                                                                        \
            for (int64_t j = 0; j < k2; j++) {                                                \
                T w = 0;                                                                      \
                for (int64_t i = 0; i < k1; i++) w += gt[j * k1 + i] * ar[i][m];              \
                gdm += w * br[j][m]; gb[j][m] += w * dt[m];                                   \
            }                                                                                 \
            gdt[m] = gdm;                                                                     \
            for (int64_t i = 0; i < k1; i++) {                                                \
                T v = 0;                                                                      \
                for (int64_t j = 0; j < k2; j++) v += gt[j * k1 + i] * br[j][m];              \
                ga[i][m] += v * dt[m];                                                        \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    return NULL;                                                                              \
}                                                                                             \
                                                                                              \
/* Run fn over n_threads contiguous token ranges; 0 on success. ga / gbt (backward) are    \
 * (n_threads, s1, dm) / (n_threads, s2, dm), thread n writing slice n. */                     \
static int run_##SUF(void *(*fn)(void *), args_##SUF base, int64_t t, int64_t n_threads,     \
                     int64_t s1, int64_t s2, size_t scratch_bytes) {                          \
    if (t <= 0 || base.k1 <= 0 || base.k2 <= 0 || base.dm <= 0) return 0; /* nothing to do */ \
    if (n_threads < 1) n_threads = 1;                                                         \
    if (n_threads > t) n_threads = t;                                                         \
    const size_t stride = round64(scratch_bytes);                                             \
    args_##SUF *args = calloc((size_t)n_threads, sizeof(args_##SUF));                         \
    unsigned char *scratch = aligned_alloc(64, stride * (size_t)n_threads);                   \
    if (!args || !scratch) { free(args); free(scratch); return 1; }                           \
    for (int64_t n = 0; n < n_threads; n++) {                                                 \
        args[n] = base;                                                                       \
        args[n].t0 = t * n / n_threads; args[n].t1 = t * (n + 1) / n_threads;                 \
        args[n].scratch = (void *)(scratch + stride * (size_t)n);                              \
        if (base.ga) { args[n].ga = base.ga + n * s1 * base.dm;                               \
                       args[n].gbt = base.gbt + n * s2 * base.dm; }                           \
    }                                                                                         \
    _Pragma("omp parallel for num_threads(n_threads) schedule(static, 1)")                    \
    for (int64_t n = 0; n < n_threads; n++) fn(&args[n]);                                     \
    free(args); free(scratch);                                                                \
    return 0;                                                                                 \
}                                                                                             \
                                                                                              \
int jac_fwd_##SUF(const T *a, const T *bt, const T *d, const int64_t *ii, const int64_t *oo, \
                  T *out, int64_t t, int64_t k1, int64_t k2, int64_t dm, int64_t n_threads) { \
    args_##SUF base = {a, bt, d, NULL, ii, oo, out, NULL, NULL, NULL, NULL, 0, 0, k1, k2, dm}; \
    return run_##SUF(fwd_range_##SUF, base, t, n_threads, 0, 0, sizeof(T) * (size_t)(k2 * dm)); \
}                                                                                             \
                                                                                              \
int jac_bwd_##SUF(const T *a, const T *bt, const T *d, const int64_t *ii, const int64_t *oo, \
                  const T *g, T *gd, T *ga, T *gbt, int64_t t, int64_t k1, int64_t k2,       \
                  int64_t dm, int64_t s1, int64_t s2, int64_t n_threads) {                    \
    args_##SUF base = {a, bt, d, g, ii, oo, NULL, gd, ga, gbt, NULL, 0, 0, k1, k2, dm};       \
    return run_##SUF(bwd_range_##SUF, base, t, n_threads, s1, s2,                              \
                     bwd_pointer_bytes(k1, k2) + sizeof(V##SUF) * (size_t)(k1 + k2));         \
}

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
