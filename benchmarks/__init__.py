"""aionetstack benchmark harness: every figure next to the kernel doing the same job.

Run ``python -m benchmarks`` (full; root for the TUN cases) or ``python -m benchmarks --quick``
(CI smoke).  Results go to ``benchmarks/results/latest.json`` and PNG plots next to it.
"""
