"""One pass over the response matrix: the sums the 3PL / 4PL / standard 4PL fit needs.

Model ``P = c_j + (d_j - c_j) * sigmoid(a_j (theta_i - b_j))`` with floor ``c`` and ceiling ``d`` per item
(py-irt's 3PL: d = 1; py-irt's 4PL: c = 0). :meth:`Cells.stats` returns, at given parameters,

* per row: d loglik / d theta_i, its Fisher information, -loglik of the row, and -d2 loglik / d theta_i^2;
* per column the sums of :data:`COLUMNS`, with ``q`` = d loglik / dP = (y - P) / (P (1 - P)), ``v`` = q^2,
  ``dx`` = dP/dx (x = a (theta - b)), ``sx`` = q dx, ``s`` = sigmoid(x), ``sb`` = 1 - s, ``s2`` = s sb (sb - s):
  G0, G1 = sum sx [1, theta]; GC, GD = sum q [sb, s]; NLL; H0..H2 = sum v dx^2 [1, theta, theta^2];
  HC0, HC1 = sum v dx sb [1, theta]; HD0, HD1 = sum v dx s [1, theta]; HCC, HDD, HCD = sum v [sb^2, s^2, s sb];
  S0..S2 = sum q g s2 [1, theta, theta^2]; T0, T1 = sum q s sb [1, theta]. From them
  :mod:`crossdiff.irt.asymptote` builds each item's gradient and observed Hessian in (b, log a, c, d).
  A pass without column information (``col_info=False``) fills G0 .. NLL only.

Two implementations of the same sums:

* ``C``: ``_cells.c``, compiled on first use with the system C compiler (``$CC``, else ``cc``) at
  ``-O3 -march=native -ffast-math -fopenmp`` into a cache folder (``$CROSSDIFF_CACHE``, else
  ``$XDG_CACHE_HOME/crossdiff``, else ``~/.cache/crossdiff``), keyed by the source, the flags, the compiler
  and the CPU. One fused pass, float32 cell arithmetic, float64 row sums and float64 column sums of
  float32 partial sums over 32 rows; 2.5 (without column information) to 5 ns of CPU time per cell.
  Passes over a few columns (the items' backtracking and refinement) read an item-major copy of the codes
  (made once, on the first such pass: one more byte per cell), so they cost their own cells: a column
  subset of the row-major matrix touches nearly all of its cache lines.
  The same library holds the fast 1PL's sweep (:mod:`crossdiff.irt.fast`).
* ``numpy``: float64 throughout, in row blocks; the reference, and the fallback when no compiler works
  (about 20x slower). ``CROSSDIFF_IRT_KERNEL=numpy`` forces it; ``=c`` makes a failed compile an error.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from scipy.special import expit

COLUMNS = ("G0", "G1", "GC", "GD", "NLL", "H0", "H1", "H2", "HC0", "HC1", "HD0", "HD1", "HCC", "HDD", "HCD",
           "S0", "S1", "S2", "T0", "T1")
N_GRAD = 5  # G0 .. NLL: the sums of a pass without column information
PMIN = 1.0e-12  # P and 1 - P are floored here (log and 1/P stay finite); the C kernel does the same
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-shared"]
SOURCE = Path(__file__).with_name("_cells.c")
_LOCK = threading.Lock()
_LIB: dict = {}


def code_matrix(Y: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """uint8 cell codes: bit 0 observed, bit 1 correct (only where observed)."""
    code = np.not_equal(Y, 0).view(np.uint8)  # a new array
    code <<= 1
    code |= 1
    code *= observed.view(np.uint8)
    return code


# --------------------------------------------------------------------------------------- numpy (reference)
def numpy_stats(code, theta, a, b, c, d, col_info=True, block_cells=1 << 18):
    """The reference: float64 sums of every row and column statistic (see the module docstring)."""
    M, N = code.shape
    row = np.zeros((M, 4))
    col = np.zeros((len(COLUMNS), N))
    g, omd = d - c, 1.0 - d
    step = max(1, block_cells // max(N, 1))
    for r0 in range(0, M, step):
        blk = code[r0:r0 + step]
        th = theta[r0:r0 + step, None]
        m = (blk & 1).astype(np.float64)
        y = (blk >> 1) & 1
        x = a * (th - b)
        s, sb = expit(x), expit(-x)
        P = np.maximum(c + g * s, PMIN)
        Pb = np.maximum(omd + g * sb, PMIN)
        q = np.where(y == 1, m / P, -m / Pb)  # d loglik / dP
        nll = -m * np.log(np.where(y == 1, P, Pb))
        ss = s * sb
        dx = g * ss  # dP / dx
        sx = q * dx
        v = q * q  # d2 (-loglik) / dP2
        qgs2 = q * g * ss * (sb - s)  # q d2P / dx2
        vdx2 = v * dx * dx
        row[r0:r0 + step] = np.stack([sx @ a, (m / (P * Pb) * dx * dx) @ (a * a), nll.sum(1), (vdx2 - qgs2) @ (a * a)], 1)
        basis = np.stack([np.ones_like(th[:, 0]), th[:, 0], th[:, 0] ** 2])
        col[0:2] += basis[:2] @ sx
        col[2] += (q * sb).sum(0)
        col[3] += (q * s).sum(0)
        col[4] += nll.sum(0)
        if col_info:
            vdx = v * dx
            col[5:8] += basis @ vdx2
            col[8:10] += basis[:2] @ (vdx * sb)
            col[10:12] += basis[:2] @ (vdx * s)
            col[12] += (v * sb * sb).sum(0)
            col[13] += (v * s * s).sum(0)
            col[14] += (v * ss).sum(0)
            col[15:18] += basis @ qgs2
            col[18:20] += basis[:2] @ (q * ss)
    return row, col


# --------------------------------------------------------------------------------------------- C kernel
def _cache_dir() -> Path:
    base = os.environ.get("CROSSDIFF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "crossdiff")
    return Path(base)


def _cpu_id() -> str:
    try:  # the instruction set -march=native compiles for
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features", "model name")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _compile(cc: str, out: Path) -> tuple[bool, str]:
    """Try the full flags, then without OpenMP threads (``-fopenmp-simd`` keeps the vector loop)."""
    errors = []
    for extra in (["-fopenmp"], ["-fopenmp-simd"]):
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            target = Path(tmp) / out.name
            cmd = [cc, *FLAGS, *extra, str(SOURCE), "-o", str(target), "-lm"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return False, f"{' '.join(cmd)}: {exc}"
            if proc.returncode == 0:
                os.replace(target, out)  # atomic: concurrent fits see the old file or the whole new one
                return True, " ".join(cmd[:-3] + ["-lm"])
            errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()[-500:]}")
    return False, "\n".join(errors)


def load_kernel():
    """The compiled kernel (ctypes function) and how it was built; (None, reason) when unavailable."""
    with _LOCK:
        if "fn" in _LIB:
            return _LIB["fn"], _LIB["how"]
        fn, how = None, ""
        cc = os.environ.get("CC") or "cc"
        if shutil.which(cc) is None:
            how = f"no C compiler ({cc!r} not found)"
        else:
            try:
                version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
            except (OSError, subprocess.TimeoutExpired):
                version = ""
            key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), cc, version, _cpu_id(),
                                            sys.platform]).encode()).hexdigest()[:20]
            out = _cache_dir() / f"irt_cells_{key}.so"
            ok, how = True, f"cached {out}"
            if not out.exists():
                try:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    ok, how = _compile(cc, out)
                except OSError as exc:
                    ok, how = False, f"{out.parent}: {exc}"
            if ok:
                try:
                    lib = ctypes.CDLL(str(out))
                    P, I64, I, D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
                    fn = lib.crossdiff_cells
                    fn.restype = I
                    fn.argtypes = [P, I64, I64] + [P] * 6 + [I, I, P, P]
                    lib.crossdiff_sweep_1pl.restype = I
                    lib.crossdiff_sweep_1pl.argtypes = [P, I64, I64, P, P, P, D, D, P, D, I, P, P, P]
                    lib.crossdiff_softplus_1pl.restype = I
                    lib.crossdiff_softplus_1pl.argtypes = [P, I64, I64, P, P, I, P]
                    lib.crossdiff_cells_cols.restype = I
                    lib.crossdiff_cells_cols.argtypes = [P, I64, I64, P, I64, P] + [P] * 5 + [I, I, P, P]
                    lib.crossdiff_transpose_u8.restype = None
                    lib.crossdiff_transpose_u8.argtypes = [P, I64, I64, P, I]
                    _LIB["lib"] = lib
                    if lib.crossdiff_cells_ncol() != len(COLUMNS):
                        fn, how = None, f"{out}: column layout differs from crossdiff.irt.cells"
                except (OSError, AttributeError) as exc:
                    fn, how = None, f"{out}: {exc}"
        _LIB.update(fn=fn, how=how)
        return fn, how


def load_library():
    """The compiled library (ctypes), or None (see :func:`load_kernel`)."""
    fn, _ = load_kernel()
    return _LIB.get("lib") if fn is not None else None


def kernel_choice() -> str:
    """``CROSSDIFF_IRT_KERNEL``: auto (C where it compiles, else the fallback), c (C or an error), numpy."""
    choice = (os.environ.get("CROSSDIFF_IRT_KERNEL") or "auto").lower()
    if choice not in ("auto", "c", "numpy"):
        raise ValueError(f"CROSSDIFF_IRT_KERNEL={choice!r}: expected auto, c or numpy")
    return choice


def _kernel_args(theta, a, b, c, d, col_info, row_info):
    """What both C passes take: float64 abilities, the float32 item columns (a, b, c, d - c, 1 - d), the mode."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    f32 = [np.ascontiguousarray(v, dtype=np.float32) for v in (a, b, c, d - c, 1.0 - d)]
    return theta, f32, (1 if col_info else 0) | (2 if row_info else 0)


def c_stats(fn, code, theta, a, b, c, d, col_info=True, threads=1, row_info=True):
    M, N = code.shape
    code = np.ascontiguousarray(code, dtype=np.uint8)
    theta, f32, mode = _kernel_args(theta, a, b, c, d, col_info, row_info)
    row = np.empty((M, 4))
    col = np.empty((len(COLUMNS), N))
    ptr = [v.ctypes.data for v in (code, theta, *f32)]
    if fn(ptr[0], M, N, *ptr[1:], mode, int(threads), row.ctypes.data, col.ctypes.data) != 0:
        raise MemoryError("crossdiff.irt.cells: the C kernel could not allocate its column sums")
    return row, col


def c_stats_cols(lib, codeT, cols, theta, a, b, c, d, col_info=True, threads=1, row_info=True):
    """:func:`c_stats` over the columns ``cols`` only, from the item-major copy ``codeT`` (N x M)."""
    N, M = codeT.shape
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    theta, f32, mode = _kernel_args(theta, a, b, c, d, col_info, row_info)
    row = np.empty((M, 4))
    col = np.empty((len(COLUMNS), cols.size))
    if lib.crossdiff_cells_cols(codeT.ctypes.data, M, N, cols.ctypes.data, cols.size, theta.ctypes.data,
                                *[v.ctypes.data for v in f32], mode, int(threads), row.ctypes.data,
                                col.ctypes.data) != 0:
        raise MemoryError("crossdiff.irt.cells: the C kernel could not allocate its row sums")
    return row, col


def transpose_codes(lib, code: np.ndarray, threads: int = 1) -> np.ndarray:
    """The item-major (N x M) copy of a row-major uint8 code matrix (tiled C transpose)."""
    code = np.ascontiguousarray(code, dtype=np.uint8)
    M, N = code.shape
    out = np.empty((N, M), dtype=np.uint8)
    lib.crossdiff_transpose_u8(code.ctypes.data, M, N, out.ctypes.data, int(threads))
    return out


# ------------------------------------------------------------------------------------------------ facade
class Cells:
    """The response matrix as cell codes, and the pass over it (C kernel, or numpy as the fallback)."""

    def __init__(self, Y: np.ndarray, observed: np.ndarray, threads: int = 1, kernel: str | None = None):
        self.code = code_matrix(Y, observed)
        self.threads = max(1, int(threads))
        choice = (kernel or os.environ.get("CROSSDIFF_IRT_KERNEL") or "auto").lower()
        if choice not in ("auto", "c", "numpy"):
            raise ValueError(f"CROSSDIFF_IRT_KERNEL={choice!r}: expected auto, c or numpy")
        self.fn, how = (None, "numpy requested") if choice == "numpy" else load_kernel()
        if self.fn is None and choice == "c":
            raise RuntimeError(f"the C kernel of crossdiff.irt.cells is unavailable: {how}")
        self.kernel = "C" if self.fn is not None else "numpy"
        self.kernel_note = how
        self.lib = load_library() if self.fn is not None else None
        self._codeT = None  # item-major copy for column subsets (C kernel), made on first use
        # float32 cells: relative rounding of a row / column sum, for objective comparisons
        self.eps = 3.0e-7 if self.fn is not None else 1.0e-12

    def stats(self, theta, a, b, c, d, col_info=True, rows=None, cols=None, row_info=True):
        """Row and column sums at these parameters, over ``rows`` x ``cols`` (index arrays; None = all).
        ``row_info=False``: the rows' gradient and informations may be left out (the C kernel skips them;
        the row objective is always there).

        ``theta`` is indexed like the full row set and ``a, b, c, d`` like the full column set; the
        result covers the selected rows / columns only, in their order.
        """
        if self.lib is not None and cols is not None and rows is None:
            # a few columns: read them from the item-major copy (a column subset of the row-major matrix
            # touches nearly every cache line of it)
            if self._codeT is None:
                self._codeT = transpose_codes(self.lib, self.code, self.threads)
            cols = np.asarray(cols, dtype=np.int64)
            if cols.size == 0:
                return np.zeros((self.code.shape[0], 4)), np.zeros((len(COLUMNS), 0))
            return c_stats_cols(self.lib, self._codeT, cols, theta, a[cols], b[cols], c[cols], d[cols],
                                col_info, self.threads, row_info)
        code = self.code
        if rows is not None:
            code, theta = code[rows], theta[rows]
        if cols is not None:
            code = np.take(code, cols, axis=1)  # contiguous; ~3x faster than code[:, cols] on a wide matrix
            a, b, c, d = a[cols], b[cols], c[cols], d[cols]
        if code.size == 0:
            return np.zeros((code.shape[0], 4)), np.zeros((len(COLUMNS), code.shape[1]))
        if self.fn is not None:
            return c_stats(self.fn, code, theta, a, b, c, d, col_info, self.threads, row_info)
        return numpy_stats(code, theta, a, b, c, d, col_info)
