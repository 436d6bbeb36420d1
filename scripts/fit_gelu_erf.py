"""Fits the rational erf behind ops/vec.h's gelu_erf and reports its float32 error.

erf(a / sqrt 2) ~ a P(a^2) / Q(a^2) on [0, 5.2] (P: 6 coefficients, Q: 6 with Q(0) = 1), linear
least squares on f Q - a P = 0, reweighted (Lawson) toward the minimax fit. Then every
coefficient is rounded to float32 and the fit is evaluated in float32 over [-8, 8] against
float64. Run: python scripts/fit_gelu_erf.py (numpy only; about 10 s).
"""
import math

import numpy as np

LIMIT = 5.2  # beyond it the kernel takes erf as 1 (erf(5.2 / sqrt 2) = 1 - 2e-7)


def fit(n_p=6, n_q=5, limit=LIMIT, rounds=60):
    a = np.concatenate([np.linspace(0, limit, 6000), limit * (0.5 - 0.5 * np.cos(np.linspace(0, math.pi, 4000)))])
    a = np.sort(a)[1:]
    f = np.array([math.erf(v / math.sqrt(2)) for v in a])
    t = a * a
    weight, q = np.ones_like(a), np.ones_like(a)
    for _ in range(rounds):
        rows = np.concatenate([-(a[:, None] * t[:, None] ** np.arange(n_p)),
                               f[:, None] * t[:, None] ** np.arange(1, n_q + 1)], 1)
        w = (weight / q)[:, None]
        sol, *_ = np.linalg.lstsq(rows * w, -f * w[:, 0], rcond=None)
        p_coef, q_coef = sol[:n_p], np.concatenate([[1.0], sol[n_p:]])
        q = np.polyval(q_coef[::-1], t)
        err = np.abs(a * np.polyval(p_coef[::-1], t) / q - f)
        weight *= 1 + 4 * err / err.max()
        weight /= weight.mean()
    return p_coef.astype(np.float32), q_coef.astype(np.float32)


def gelu_float32(x, p_coef, q_coef):
    x = x.astype(np.float32)
    h = np.float32(0.5) * x
    a = np.abs(h) * np.float32(2)
    t = a * a
    p = np.full_like(t, p_coef[-1])
    for c in p_coef[-2::-1]:
        p = p * t + c
    q = np.full_like(t, q_coef[-1])
    for c in q_coef[-2::-1]:
        q = q * t + c
    erf = np.where(a < np.float32(LIMIT), a * p / q, np.float32(1))
    return h + np.abs(h) * erf


if __name__ == "__main__":
    p_coef, q_coef = fit()
    print("P (a^0, a^2, ...):", [float(c) for c in p_coef])
    print("Q (a^0, a^2, ...):", [float(c) for c in q_coef])
    x = np.linspace(-8, 8, 400001)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x])
    err = np.abs(gelu_float32(x, p_coef, q_coef) - exact)
    pos = x > 0
    print(f"float32 GELU: max abs error {err.max():.3g}, max rel error for x > 0 {(err[pos] / exact[pos]).max():.3g}")
