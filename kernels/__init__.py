"""Numba kernels of iterseg (installed as ``iterseg.kernels``), each with a NumPy twin."""
from .area import block_means, can_block_mean
from .grid import grid_starts, grid_windows
from .reference import (
    block_means_reference,
    lowest_k_reference,
    margin_map_reference,
    uncertainty_map_reference,
    window_means_reference,
)
from .warm import warm_up
from .windows import lowest_k, margin_map, uncertainty_map, window_means, window_means_by_rows

__all__ = ["grid_starts", "grid_windows", "window_means", "window_means_by_rows", "lowest_k", "uncertainty_map",
           "margin_map", "window_means_reference", "lowest_k_reference", "uncertainty_map_reference",
           "margin_map_reference", "block_means", "can_block_mean", "block_means_reference", "warm_up"]
