"""iglubuild: the build system of Iglunix.

Data flow, one module per stage:
recipe (parse + validate) -> graph (order) -> plan (signatures) -> fetch (sources)
-> scheduler (parallel) -> build (phases, via an executor) -> package (.tar.zst)
-> image (iglunix.img) -> boot (QEMU smoke test).
"""

__version__ = "0.1.0"
