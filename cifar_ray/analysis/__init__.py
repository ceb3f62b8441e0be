"""Analysis of a sweep's output folder: tables, figures and REPORT.md.

    from cifar_ray.analysis import analyse_sweep
    analyse_sweep(Path("results/cnn_search-20250101-120000"))

writes OUT/analysis/ (summary and trial tables, per-model and sweep-wide
figures) and OUT/REPORT.md. The command-line entry point is
`python analysis/analyse.py OUT`.
"""

from cifar_ray.analysis.pipeline import analyse_sweep

__all__ = ["analyse_sweep"]
