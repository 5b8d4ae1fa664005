"""``accelerate launch -m sslterm.train RUN_DIR``: one training process of a run."""

import sys

from sslterm.process import exit_process
from sslterm.train.engine import run_training

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: accelerate launch -m sslterm.train RUN_DIR", file=sys.stderr)
        sys.exit(2)
    exit_process(run_training(sys.argv[1]))
