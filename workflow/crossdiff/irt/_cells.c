/* Per-pass statistics of the 3PL / 4PL / standard 4PL response model, fused into one pass over the
 * dense response matrix (crossdiff.irt.cells compiles this file on first use; the numpy code there is
 * the reference it is tested against).
 *
 * Model: P = c_j + g_j * s, s = sigmoid(x), x = a_j (theta_i - b_j), g_j = d_j - c_j (floor c, ceiling d).
 * code[i, j]: bit 0 = observed, bit 1 = correct (missing cells contribute nothing).
 *
 * Outputs (float64): row_out[i] = (d loglik / d theta_i, Fisher information of theta_i, -loglik of row i,
 * -d2 loglik / d theta_i^2); col_out[k * N + j] for the column sums listed in the enum below, with
 * sx = d loglik / dx = q dP/dx, q = (y - P) / (P (1 - P)), v = q^2, dx = dP/dx = g s sb, s2 = s sb (sb - s).
 *
 * Cell arithmetic is float32 (vectorised, expf/logf from libmvec); row sums are float64, column sums are
 * float32 over at most FLUSH rows and then float64. Rows are split into one contiguous range per thread
 * and the threads' float64 column sums are added in thread order: the same inputs and thread count give
 * the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { G0, G1, GC, GD, NLL, H0, H1, H2, HC0, HC1, HD0, HD1, HCC, HDD, HCD, S0, S1, S2, T0, T1, NCOL };
#define NCOL_GRAD 5 /* G0 .. NLL: what a pass without column information needs */
#define FLUSH 32
#define PMIN 1.0e-12f

int crossdiff_cells_ncol(void) { return NCOL; }

/* One cell's quantities at (theta_i, item j): every pass below computes them with this function. */
typedef struct {
  float m, s, sb, q, nll, ss, dx, sx, v, qgs2, vdx2, iPP;
} cell_t;

static inline __attribute__((always_inline)) cell_t cell_at(const int code, const float th, const float a,
                                                            const float b, const float c, const float g,
                                                            const float omd) {
  cell_t k;
  const float y = (float)((code >> 1) & 1);
  k.m = (float)(code & 1);
  const float x = a * (th - b);
  const float e = expf(-fabsf(x)), t = 1.0f / (1.0f + e);
  k.s = x >= 0.0f ? t : e * t;
  k.sb = x >= 0.0f ? e * t : t;
  const float P = fmaxf(c + g * k.s, PMIN), Pb = fmaxf(omd + g * k.sb, PMIN);
  k.iPP = 1.0f / (P * Pb);
  k.q = y > 0.0f ? k.m * (Pb * k.iPP) : -k.m * (P * k.iPP);
  k.nll = -k.m * logf(y > 0.0f ? P : Pb);
  k.ss = k.s * k.sb;
  k.dx = g * k.ss;
  k.sx = k.q * k.dx;
  k.v = k.q * k.q;
  k.qgs2 = k.q * g * k.ss * (k.sb - k.s);
  k.vdx2 = k.v * k.dx * k.dx;
  return k;
}

/* A row's sums of one cell: d loglik / d theta, its Fisher information, -loglik, -d2 loglik / d theta^2
 * (row_info: the first, second and fourth; the objective always). */
#define ROW_SUMS(k, aj, a2, rg, rh, rn, ro)                      \
  do {                                                            \
    (rn) += (double)(k).nll;                                      \
    if (row_info) {                                               \
      (rg) += (double)((k).sx * (aj));                            \
      (rh) += (double)((k).m * (k).iPP * (k).dx * (k).dx * (a2)); \
      (ro) += (double)(((k).vdx2 - (k).qgs2) * (a2));             \
    }                                                             \
  } while (0)

/* A column's float32 partial sums (the enum above) and adding one cell to them. */
#define COL_DECL                                                                                               \
  float G0s = 0.0f, G1s = 0.0f, GCs = 0.0f, GDs = 0.0f, NLLs = 0.0f, H0s = 0.0f, H1s = 0.0f, H2s = 0.0f,      \
        HC0s = 0.0f, HC1s = 0.0f, HD0s = 0.0f, HD1s = 0.0f, HCCs = 0.0f, HDDs = 0.0f, HCDs = 0.0f, S0s = 0.0f, \
        S1s = 0.0f, S2s = 0.0f, T0s = 0.0f, T1s = 0.0f
#define COL_LIST \
  G0s, G1s, GCs, GDs, NLLs, H0s, H1s, H2s, HC0s, HC1s, HD0s, HD1s, HCCs, HDDs, HCDs, S0s, S1s, S2s, T0s, T1s
#define COL_ADD(k, th)                                                                           \
  do {                                                                                           \
    G0s += (k).sx;                                                                               \
    G1s += (k).sx * (th);                                                                        \
    GCs += (k).q * (k).sb;                                                                       \
    GDs += (k).q * (k).s;                                                                        \
    NLLs += (k).nll;                                                                             \
    if (col_info) {                                                                              \
      const float vdx_ = (k).v * (k).dx, qss_ = (k).q * (k).ss;                                  \
      H0s += (k).vdx2;                                                                           \
      H1s += (k).vdx2 * (th);                                                                    \
      H2s += (k).vdx2 * (th) * (th);                                                             \
      HC0s += vdx_ * (k).sb;                                                                     \
      HC1s += vdx_ * (k).sb * (th);                                                              \
      HD0s += vdx_ * (k).s;                                                                      \
      HD1s += vdx_ * (k).s * (th);                                                               \
      HCCs += (k).v * (k).sb * (k).sb;                                                           \
      HDDs += (k).v * (k).s * (k).s;                                                             \
      HCDs += (k).v * (k).ss;                                                                    \
      S0s += (k).qgs2;                                                                           \
      S1s += (k).qgs2 * (th);                                                                    \
      S2s += (k).qgs2 * (th) * (th);                                                             \
      T0s += qss_;                                                                               \
      T1s += qss_ * (th);                                                                        \
    }                                                                                            \
  } while (0)
/* dst(K) += the partial sums, K one of the enum's names (an array element or a float32 column sum). */
#define COL_STORE(dst)                                                                                       \
  do {                                                                                                       \
    dst(G0) += G0s; dst(G1) += G1s; dst(GC) += GCs; dst(GD) += GDs; dst(NLL) += NLLs;                       \
    if (col_info) {                                                                                          \
      dst(H0) += H0s; dst(H1) += H1s; dst(H2) += H2s; dst(HC0) += HC0s; dst(HC1) += HC1s; dst(HD0) += HD0s; \
      dst(HD1) += HD1s; dst(HCC) += HCCs; dst(HDD) += HDDs; dst(HCD) += HCDs; dst(S0) += S0s;               \
      dst(S1) += S1s; dst(S2) += S2s; dst(T0) += T0s; dst(T1) += T1s;                                       \
    }                                                                                                        \
  } while (0)
/* the column sums of a row-major pass: one float32 array of N per sum, restrict (no two overlap) */
#define ACC_PTRS                                                                                            \
  float *restrict aG0 = acc + G0 * N, *restrict aG1 = acc + G1 * N, *restrict aGC = acc + GC * N;           \
  float *restrict aGD = acc + GD * N, *restrict aNLL = acc + NLL * N, *restrict aH0 = acc + H0 * N;         \
  float *restrict aH1 = acc + H1 * N, *restrict aH2 = acc + H2 * N, *restrict aHC0 = acc + HC0 * N;         \
  float *restrict aHC1 = acc + HC1 * N, *restrict aHD0 = acc + HD0 * N, *restrict aHD1 = acc + HD1 * N;     \
  float *restrict aHCC = acc + HCC * N, *restrict aHDD = acc + HDD * N, *restrict aHCD = acc + HCD * N;     \
  float *restrict aS0 = acc + S0 * N, *restrict aS1 = acc + S1 * N, *restrict aS2 = acc + S2 * N;           \
  float *restrict aT0 = acc + T0 * N, *restrict aT1 = acc + T1 * N
#define ACC_AT(K) a##K[j]

/* The cells of one row: its sums, and its terms added to the float32 column sums. */
static inline __attribute__((always_inline)) void one_row(
    const uint8_t *restrict ci, int64_t N, float th, const float *restrict a, const float *restrict b,
    const float *restrict c, const float *restrict g, const float *restrict omd, float *restrict acc,
    double *restrict out, const int col_info, const int row_info) {
  double rg = 0.0, rh = 0.0, rn = 0.0, ro = 0.0;
  ACC_PTRS;
#pragma omp simd reduction(+ : rg, rh, rn, ro)
  for (int64_t j = 0; j < N; j++) {
    const cell_t k = cell_at(ci[j], th, a[j], b[j], c[j], g[j], omd[j]);
    ROW_SUMS(k, a[j], a[j] * a[j], rg, rh, rn, ro);
    COL_DECL;
    COL_ADD(k, th);
    COL_STORE(ACC_AT);
  }
  out[0] = rg;
  out[1] = rh;
  out[2] = rn;
  out[3] = ro;
}

/* four_rows: row n of the four: its cell at column j, its row sums, its terms of the column sums */
#define ROW_N(n)                                                                \
  do {                                                                          \
    const cell_t k = cell_at(c##n[j], th##n, aj, b[j], c[j], g[j], omd[j]);     \
    ROW_SUMS(k, aj, a2, rg##n, rh##n, rn##n, ro##n);                            \
    COL_ADD(k, th##n);                                                          \
  } while (0)

/* The same sums as one_row for 4 rows at once: each column sum is loaded and stored once per 4 cells. */
static inline __attribute__((always_inline)) void four_rows(
    const uint8_t *restrict code, int64_t N, const double *theta, const float *restrict a,
    const float *restrict b, const float *restrict c, const float *restrict g, const float *restrict omd,
    float *restrict acc, double *restrict out, const int col_info, const int row_info) {
  const uint8_t *restrict c0 = code, *restrict c1 = code + N, *restrict c2 = code + 2 * N, *restrict c3 = code + 3 * N;
  const float th0 = (float)theta[0], th1 = (float)theta[1], th2 = (float)theta[2], th3 = (float)theta[3];
  double rg0 = 0.0, rh0 = 0.0, rn0 = 0.0, ro0 = 0.0, rg1 = 0.0, rh1 = 0.0, rn1 = 0.0, ro1 = 0.0;
  double rg2 = 0.0, rh2 = 0.0, rn2 = 0.0, ro2 = 0.0, rg3 = 0.0, rh3 = 0.0, rn3 = 0.0, ro3 = 0.0;
  ACC_PTRS;
#pragma omp simd reduction(+ : rg0, rh0, rn0, ro0, rg1, rh1, rn1, ro1, rg2, rh2, rn2, ro2, rg3, rh3, rn3, ro3)
  for (int64_t j = 0; j < N; j++) {
    const float aj = a[j], a2 = aj * aj;
    COL_DECL;
    ROW_N(0);
    ROW_N(1);
    ROW_N(2);
    ROW_N(3);
#undef ROW_N
    COL_STORE(ACC_AT);
  }
  out[0] = rg0; out[1] = rh0; out[2] = rn0; out[3] = ro0;
  out[4] = rg1; out[5] = rh1; out[6] = rn1; out[7] = ro1;
  out[8] = rg2; out[9] = rh2; out[10] = rn2; out[11] = ro2;
  out[12] = rg3; out[13] = rh3; out[14] = rn3; out[15] = ro3;
}

static void rows_range(const uint8_t *code, int64_t r0, int64_t r1, int64_t N, const double *theta,
                       const float *a, const float *b, const float *c, const float *g, const float *omd,
                       int mode, int ncol, float *acc, double *dacc, double *row_out) {
  int pending = 0;
  memset(acc, 0, sizeof(float) * ncol * N);
  for (int64_t i = r0; i < r1;) {
    int step = 1;
    const double *th = theta + i;
    double *out = row_out + 4 * i;
    const uint8_t *ci = code + i * N;
    if (i + 4 <= r1 && pending + 4 <= FLUSH) {
      step = 4;
      switch (mode) {
        case 1: four_rows(ci, N, th, a, b, c, g, omd, acc, out, 1, 0); break;
        case 2: four_rows(ci, N, th, a, b, c, g, omd, acc, out, 0, 1); break;
        case 3: four_rows(ci, N, th, a, b, c, g, omd, acc, out, 1, 1); break;
        default: four_rows(ci, N, th, a, b, c, g, omd, acc, out, 0, 0);
      }
    } else {
      switch (mode) {
        case 1: one_row(ci, N, (float)*th, a, b, c, g, omd, acc, out, 1, 0); break;
        case 2: one_row(ci, N, (float)*th, a, b, c, g, omd, acc, out, 0, 1); break;
        case 3: one_row(ci, N, (float)*th, a, b, c, g, omd, acc, out, 1, 1); break;
        default: one_row(ci, N, (float)*th, a, b, c, g, omd, acc, out, 0, 0);
      }
    }
    i += step;
    pending += step;
    if (pending >= FLUSH || i == r1) {
      for (int64_t k = 0; k < (int64_t)ncol * N; k++) {
        dacc[k] += acc[k];
        acc[k] = 0.0f;
      }
      pending = 0;
    }
  }
}

/* Returns 0, or -1 when memory ran out. a, b, c, g (= d - c), omd (= 1 - d) are float32 per column.
 * mode: bit 0 = the column information sums (H0 .. T1), bit 1 = the row gradient and informations
 * (row_out[:, 0], [1], [3]; else 0). The row objective and G0 .. NLL are always computed. */
int crossdiff_cells(const uint8_t *code, int64_t M, int64_t N, const double *theta, const float *a,
                    const float *b, const float *c, const float *g, const float *omd, int mode,
                    int nthreads, double *row_out, double *col_out) {
  const int ncol = (mode & 1) ? NCOL : NCOL_GRAD;
  if (nthreads < 1) nthreads = 1;
  if (nthreads > M) nthreads = M > 0 ? (int)M : 1;
  double *dacc = calloc((size_t)nthreads * ncol * N, sizeof(double));
  float *acc = malloc((size_t)nthreads * ncol * N * sizeof(float));
  if (!dacc || !acc) {
    free(dacc);
    free(acc);
    return -1;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
#endif
  for (int t = 0; t < nthreads; t++) {
    const int64_t r0 = M * t / nthreads, r1 = M * (t + 1) / nthreads;
    rows_range(code, r0, r1, N, theta, a, b, c, g, omd, mode, ncol, acc + (size_t)t * ncol * N,
               dacc + (size_t)t * ncol * N, row_out);
  }
  memset(col_out, 0, sizeof(double) * NCOL * N);
  for (int t = 0; t < nthreads; t++)
    for (int64_t k = 0; k < (int64_t)ncol * N; k++) col_out[k] += dacc[(size_t)t * ncol * N + k];
  free(dacc);
  free(acc);
  return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * The fast 1PL's sweep (crossdiff.irt.fast): per row i the ability's Newton step
 *   g_i = sum_j m p - s_row_i + tau (theta_i - mu),  h_i = sum_j m p (1 - p) + tau,
 *   d_i = clip(-g_i / h_i, +-max_step) * regular_i,
 * then the column sums at the current abilities, col_out = (sum_i m p, sum_i m w, sum_i m w d_i) with
 * w = p (1 - p): the difficulty step linearises the column sums in d (crossdiff.irt.fast.sweep_1pl).
 * p is kept in a row buffer between the two loops. Row sums float64; column sums as crossdiff_cells.
 */
static void rows_1pl(const uint8_t *code, int64_t r0, int64_t r1, int64_t N, const double *theta,
                     const float *b, const double *s_row, double tau, double mu, const uint8_t *regular,
                     double max_step, float *pbuf, float *acc, double *dacc, double *d_out, double *h_out) {
  int pending = 0;
  float *restrict aP = acc, *restrict aW = acc + N, *restrict aD = acc + 2 * N;
  memset(acc, 0, sizeof(float) * 3 * N);
  for (int64_t i = r0; i < r1; i++) {
    const uint8_t *restrict ci = code + i * N;
    const float th = (float)theta[i];
    double sp = 0.0, sw = 0.0;
#pragma omp simd reduction(+ : sp, sw)
    for (int64_t j = 0; j < N; j++) {
      const float m = (float)(ci[j] & 1);
      const float p = m / (1.0f + expf(b[j] - th));
      pbuf[j] = p;
      sp += (double)p;
      sw += (double)(p - p * p);
    }
    const double g = sp - s_row[i] + tau * (theta[i] - mu), h = sw + tau;
    double d = -g / h;
    d = d > max_step ? max_step : (d < -max_step ? -max_step : d);
    d = regular[i] ? d : 0.0;
    d_out[i] = d;
    h_out[i] = h;
    const float df = (float)d;
#pragma omp simd
    for (int64_t j = 0; j < N; j++) {
      const float p = pbuf[j], w = p - p * p;
      aP[j] += p;
      aW[j] += w;
      aD[j] += w * df;
    }
    if (++pending == FLUSH || i + 1 == r1) {
      for (int64_t k = 0; k < 3 * N; k++) {
        dacc[k] += acc[k];
        acc[k] = 0.0f;
      }
      pending = 0;
    }
  }
}

int crossdiff_sweep_1pl(const uint8_t *code, int64_t M, int64_t N, const double *theta, const float *b,
                        const double *s_row, double tau, double mu, const uint8_t *regular, double max_step,
                        int nthreads, double *d_out, double *h_out, double *col_out) {
  if (nthreads < 1) nthreads = 1;
  if (nthreads > M) nthreads = M > 0 ? (int)M : 1;
  double *dacc = calloc((size_t)nthreads * 3 * N, sizeof(double));
  float *acc = malloc((size_t)nthreads * 4 * N * sizeof(float)); /* 3 N sums + N row buffer per thread */
  if (!dacc || !acc) {
    free(dacc);
    free(acc);
    return -1;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
#endif
  for (int t = 0; t < nthreads; t++) {
    const int64_t r0 = M * t / nthreads, r1 = M * (t + 1) / nthreads;
    float *mine = acc + (size_t)t * 4 * N;
    rows_1pl(code, r0, r1, N, theta, b, s_row, tau, mu, regular, max_step, mine + 3 * N, mine,
             dacc + (size_t)t * 3 * N, d_out, h_out);
  }
  memset(col_out, 0, sizeof(double) * 3 * N);
  for (int t = 0; t < nthreads; t++)
    for (int64_t k = 0; k < 3 * N; k++) col_out[k] += dacc[(size_t)t * 3 * N + k];
  free(dacc);
  free(acc);
  return 0;
}

/* sum over observed cells of softplus(theta_i - b_j), per row (the 1PL objective's dense part). */
int crossdiff_softplus_1pl(const uint8_t *code, int64_t M, int64_t N, const double *theta, const float *b,
                           int nthreads, double *row_out) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads > 0 ? nthreads : 1) schedule(static)
#endif
  for (int64_t i = 0; i < M; i++) {
    const uint8_t *restrict ci = code + i * N;
    const float th = (float)theta[i];
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < N; j++) {
      const float x = th - b[j];
      s += (double)((float)(ci[j] & 1) * (fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)))));
    }
    row_out[i] = s;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Column subsets (the items' backtracking and refinement): the sums of crossdiff_cells over the columns
 * cols[0..K) only, read from the item-major copy codeT (N x M, crossdiff_transpose_u8), so that a few
 * hundred columns cost their own cells and not a pass over every cache line of the row-major matrix.
 * a, b, c, g, omd are the K selected items' parameters. Items are split into one contiguous range per
 * thread; per item the column sums are float32 over CBLK rows, then float64; the row sums go to a float64
 * buffer per thread, added in thread order (same inputs and thread count, same bits). The cell arithmetic
 * is cell_at's, as in every pass.
 */
#define CBLK 256

static inline __attribute__((always_inline)) void one_col(
    const uint8_t *restrict ci, int64_t M, const float *restrict th, const float aj, const float bj,
    const float cj, const float gj, const float omdj, double *restrict dsum, double *restrict rg,
    double *restrict rh, double *restrict rn, double *restrict ro, const int col_info, const int row_info) {
  const float a2 = aj * aj;
  for (int k = 0; k < NCOL; k++) dsum[k] = 0.0;
  for (int64_t i0 = 0; i0 < M; i0 += CBLK) {
    const int64_t i1 = i0 + CBLK < M ? i0 + CBLK : M;
    COL_DECL;
#pragma omp simd reduction(+ : COL_LIST)
    for (int64_t i = i0; i < i1; i++) {
      const cell_t k = cell_at(ci[i], th[i], aj, bj, cj, gj, omdj);
      ROW_SUMS(k, aj, a2, rg[i], rh[i], rn[i], ro[i]);
      COL_ADD(k, th[i]);
    }
#define DSUM_AT(K) dsum[K]
    COL_STORE(DSUM_AT);
#undef DSUM_AT
  }
}

/* Returns 0, or -1 when memory ran out. mode as crossdiff_cells; col_out is NCOL x K (column sums of
 * a pass without column information: G0 .. NLL, the rest 0), row_out M x 4. */
int crossdiff_cells_cols(const uint8_t *codeT, int64_t M, int64_t N, const int64_t *cols, int64_t K,
                         const double *theta, const float *a, const float *b, const float *c, const float *g,
                         const float *omd, int mode, int nthreads, double *row_out, double *col_out) {
  (void)N;
  if (nthreads < 1) nthreads = 1;
  if (nthreads > K) nthreads = K > 0 ? (int)K : 1;
  float *thf = malloc(sizeof(float) * (M > 0 ? M : 1));
  double *rbuf = calloc((size_t)nthreads * 4 * (M > 0 ? M : 1), sizeof(double));
  if (!thf || !rbuf) {
    free(thf);
    free(rbuf);
    return -1;
  }
  for (int64_t i = 0; i < M; i++) thf[i] = (float)theta[i];
  memset(col_out, 0, sizeof(double) * NCOL * K);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
#endif
  for (int t = 0; t < nthreads; t++) {
    const int64_t k0 = K * t / nthreads, k1 = K * (t + 1) / nthreads;
    double *rg = rbuf + (size_t)t * 4 * M, *rh = rg + M, *rn = rh + M, *ro = rn + M;
    double dsum[NCOL];
    for (int64_t k = k0; k < k1; k++) {
      const uint8_t *ci = codeT + cols[k] * M;
      switch (mode) {
        case 1: one_col(ci, M, thf, a[k], b[k], c[k], g[k], omd[k], dsum, rg, rh, rn, ro, 1, 0); break;
        case 2: one_col(ci, M, thf, a[k], b[k], c[k], g[k], omd[k], dsum, rg, rh, rn, ro, 0, 1); break;
        case 3: one_col(ci, M, thf, a[k], b[k], c[k], g[k], omd[k], dsum, rg, rh, rn, ro, 1, 1); break;
        default: one_col(ci, M, thf, a[k], b[k], c[k], g[k], omd[k], dsum, rg, rh, rn, ro, 0, 0);
      }
      for (int j = 0; j < NCOL; j++) col_out[(int64_t)j * K + k] = dsum[j];
    }
  }
  for (int64_t i = 0; i < M; i++) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (int t = 0; t < nthreads; t++) {
      const double *r = rbuf + (size_t)t * 4 * M;
      s0 += r[i];
      s1 += r[M + i];
      s2 += r[2 * M + i];
      s3 += r[3 * M + i];
    }
    row_out[4 * i] = s0;
    row_out[4 * i + 1] = s1;
    row_out[4 * i + 2] = s2;
    row_out[4 * i + 3] = s3;
  }
  free(thf);
  free(rbuf);
  return 0;
}

/* dst (N x M) = src (M x N)', uint8, in 64 x 64 tiles. */
void crossdiff_transpose_u8(const uint8_t *src, int64_t M, int64_t N, uint8_t *dst, int nthreads) {
  const int64_t T = 64;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads > 0 ? nthreads : 1) schedule(static)
#endif
  for (int64_t j0 = 0; j0 < N; j0 += T)
    for (int64_t i0 = 0; i0 < M; i0 += T) {
      const int64_t i1 = i0 + T < M ? i0 + T : M, j1 = j0 + T < N ? j0 + T : N;
      for (int64_t j = j0; j < j1; j++)
        for (int64_t i = i0; i < i1; i++) dst[j * M + i] = src[i * N + j];
    }
}
