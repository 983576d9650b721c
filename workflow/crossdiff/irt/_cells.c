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

static inline __attribute__((always_inline)) void one_row(
    const uint8_t *restrict ci, int64_t N, float th, const float *restrict a, const float *restrict b,
    const float *restrict c, const float *restrict g, const float *restrict omd, float *restrict acc,
    double *restrict out, const int col_info) {
  double rg = 0.0, rh = 0.0, rn = 0.0, ro = 0.0;
  const float th2 = th * th;
  float *restrict aG0 = acc + G0 * N, *restrict aG1 = acc + G1 * N, *restrict aGC = acc + GC * N;
  float *restrict aGD = acc + GD * N, *restrict aNLL = acc + NLL * N;
  float *restrict aH0 = acc + H0 * N, *restrict aH1 = acc + H1 * N, *restrict aH2 = acc + H2 * N;
  float *restrict aHC0 = acc + HC0 * N, *restrict aHC1 = acc + HC1 * N, *restrict aHD0 = acc + HD0 * N;
  float *restrict aHD1 = acc + HD1 * N, *restrict aHCC = acc + HCC * N, *restrict aHDD = acc + HDD * N;
  float *restrict aHCD = acc + HCD * N, *restrict aS0 = acc + S0 * N, *restrict aS1 = acc + S1 * N;
  float *restrict aS2 = acc + S2 * N, *restrict aT0 = acc + T0 * N, *restrict aT1 = acc + T1 * N;
#pragma omp simd reduction(+ : rg, rh, rn, ro)
  for (int64_t j = 0; j < N; j++) {
    const int code = ci[j];
    const float m = (float)(code & 1), y = (float)((code >> 1) & 1);
    const float x = a[j] * (th - b[j]);
    const float e = expf(-fabsf(x)), t = 1.0f / (1.0f + e);
    const float s = x >= 0.0f ? t : e * t, sb = x >= 0.0f ? e * t : t;
    const float P = fmaxf(c[j] + g[j] * s, PMIN), Pb = fmaxf(omd[j] + g[j] * sb, PMIN);
    const float iP = 1.0f / P, iPb = 1.0f / Pb;
    const float q = y > 0.0f ? m * iP : -m * iPb;
    const float nll = -m * logf(y > 0.0f ? P : Pb);
    const float ss = s * sb;
    const float dx = g[j] * ss;
    const float sx = q * dx;
    const float v = q * q;
    const float qgs2 = q * g[j] * ss * (sb - s);
    const float vdx2 = v * dx * dx;
    const float a2 = a[j] * a[j];
    rg += (double)(sx * a[j]);
    rh += (double)(m * iP * iPb * dx * dx * a2);
    rn += (double)nll;
    ro += (double)((vdx2 - qgs2) * a2);
    aG0[j] += sx;
    aG1[j] += sx * th;
    aGC[j] += q * sb;
    aGD[j] += q * s;
    aNLL[j] += nll;
    if (col_info) {
      const float vdx = v * dx, qss = q * ss;
      aH0[j] += vdx2;
      aH1[j] += vdx2 * th;
      aH2[j] += vdx2 * th2;
      aHC0[j] += vdx * sb;
      aHC1[j] += vdx * sb * th;
      aHD0[j] += vdx * s;
      aHD1[j] += vdx * s * th;
      aHCC[j] += v * sb * sb;
      aHDD[j] += v * s * s;
      aHCD[j] += v * ss;
      aS0[j] += qgs2;
      aS1[j] += qgs2 * th;
      aS2[j] += qgs2 * th2;
      aT0[j] += qss;
      aT1[j] += qss * th;
    }
  }
  out[0] = rg;
  out[1] = rh;
  out[2] = rn;
  out[3] = ro;
}

static void rows_range(const uint8_t *code, int64_t r0, int64_t r1, int64_t N, const double *theta,
                       const float *a, const float *b, const float *c, const float *g, const float *omd,
                       int col_info, int ncol, float *acc, double *dacc, double *row_out) {
  int pending = 0;
  memset(acc, 0, sizeof(float) * ncol * N);
  for (int64_t i = r0; i < r1; i++) {
    if (col_info)
      one_row(code + i * N, N, (float)theta[i], a, b, c, g, omd, acc, row_out + 4 * i, 1);
    else
      one_row(code + i * N, N, (float)theta[i], a, b, c, g, omd, acc, row_out + 4 * i, 0);
    if (++pending == FLUSH || i + 1 == r1) {
      for (int64_t k = 0; k < (int64_t)ncol * N; k++) {
        dacc[k] += acc[k];
        acc[k] = 0.0f;
      }
      pending = 0;
    }
  }
}

/* Returns 0, or -1 when memory ran out. a, b, c, g (= d - c), omd (= 1 - d) are float32 per column. */
int crossdiff_cells(const uint8_t *code, int64_t M, int64_t N, const double *theta, const float *a,
                    const float *b, const float *c, const float *g, const float *omd, int col_info,
                    int nthreads, double *row_out, double *col_out) {
  const int ncol = col_info ? NCOL : NCOL_GRAD;
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
    rows_range(code, r0, r1, N, theta, a, b, c, g, omd, col_info, ncol, acc + (size_t)t * ncol * N,
               dacc + (size_t)t * ncol * N, row_out);
  }
  memset(col_out, 0, sizeof(double) * NCOL * N);
  for (int t = 0; t < nthreads; t++)
    for (int64_t k = 0; k < (int64_t)ncol * N; k++) col_out[k] += dacc[(size_t)t * ncol * N + k];
  free(dacc);
  free(acc);
  return 0;
}
