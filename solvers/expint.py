"""What the exponential and linear multistep integrators share: the phi functions and the order
schedule of a multistep method (DPM-Solver(++), UniPC, DEIS, iPNDM).

phi functions (Hochbruck & Ostermann 2010, "Exponential integrators", eq. 2.10):

    phi_k(z) = sum_{n >= 0} z^n / (n + k)!,   phi_0(z) = e^z,   phi_{k+1}(z) = (phi_k(z) - 1/k!) / z,

so phi_1(z) = (e^z - 1)/z, phi_2(z) = (e^z - 1 - z)/z^2, ... DPM-Solver writes its coefficients with
psi_k(z) = z phi_k(z): psi_1 = expm1(z), psi_2 = (e^z - 1 - z)/z, psi_3 = (e^z - 1 - z - z^2/2)/z^2
(the official code's phi_1, phi_2, phi_3 up to sign).
"""
from __future__ import annotations

import math

__all__ = ["phi", "psi", "multistep_orders"]


def phi(k: int, z: float) -> float:
    """phi_k(z), by its series where |z| < 1 (the recurrence cancels there), else by the recurrence."""
    if abs(z) < 1.0:
        term, total, n = 1.0 / math.factorial(k), 0.0, 0
        while True:
            total += term
            n += 1
            term *= z / (n + k)
            if abs(term) < 1e-18 * abs(total):
                return total + term
    val = math.exp(z)
    for j in range(k):
        val = (val - 1.0 / math.factorial(j)) / z
    return val


def psi(k: int, z: float) -> float:
    """psi_k(z) = z phi_k(z) (psi_1 = expm1(z)), without cancellation for small |z|."""
    return math.expm1(z) if k == 1 else z * phi(k, z)


def multistep_orders(steps: int, order: int, lower_order_final: bool, final_below: int | None = None) -> list[int]:
    """The order of each step of a multistep method of ``order``.

    The history is short on the first steps, so step i (0-based) has order p_i = min(order, i + 1)
    (warm-up); with ``lower_order_final`` the last steps lower it too, p_i = min(p_i, steps - i) (the
    rule of the official UniPC and DPM-Solver++ multistep code), where ``final_below`` is given only
    on grids of fewer steps (the official DPM-Solver code: below 10 steps)."""
    orders = [min(order, i + 1) for i in range(steps)]
    if lower_order_final and (final_below is None or steps < final_below):
        orders = [min(p, steps - i) for i, p in enumerate(orders)]
    return orders
