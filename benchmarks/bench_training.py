"""Full-scale training benchmark: the same run as `fastrnn-bench`, as a script.

    python benchmarks/bench_training.py                  # full scale, every contender
    python benchmarks/bench_training.py --preset small   # about a minute
    python benchmarks/bench_training.py --help           # every flag

Use ``fastrnn.bench.training.run(...)`` to get the results dict in your own code
(the same dict ``--json`` writes).
"""
import sys

from fastrnn.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
