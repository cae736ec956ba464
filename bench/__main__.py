"""``python -m bench``: the one entry point of the benchmarks (``make bench`` calls it).

Some machines set ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` to pin OpenBLAS to an older kernel,
which slows numpy. The benchmarks measure the code, not that setting: when either is set, this
re-executes itself once without them (for its own process tree only; the values found are
recorded in the results under ``machine.blas_environment``). ``QMTL_BENCH_KEEP_BLAS_ENV=1`` keeps
them. This must happen before numpy is imported, hence here and with the standard library only.
"""

import json
import os
import sys

from bench.common import BLAS_VARIABLES, ORIGINAL_BLAS_ENV  # standard library only

if (
    any(name in os.environ for name in BLAS_VARIABLES)
    and ORIGINAL_BLAS_ENV not in os.environ
    and os.environ.get("QMTL_BENCH_KEEP_BLAS_ENV") != "1"
):
    environment = dict(os.environ)
    environment[ORIGINAL_BLAS_ENV] = json.dumps({name: os.environ.get(name) for name in BLAS_VARIABLES})
    for name in BLAS_VARIABLES:
        environment.pop(name, None)
    os.execve(sys.executable, [sys.executable, "-m", "bench", *sys.argv[1:]], environment)

from bench.cli import main  # noqa: E402 - after the environment is settled

if __name__ == "__main__":
    raise SystemExit(main())
