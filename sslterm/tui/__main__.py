"""``python -m sslterm.tui [--output-dir DIR] [--profiles-dir DIR] [--figures-dir DIR]``:
the app alone."""

from __future__ import annotations

import argparse
import sys

from sslterm.tui.app import run_app
from sslterm.tui.figures import FIGURES_ENV


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sslterm.tui")
    parser.add_argument("--output-dir", "-o", default="./runs")
    parser.add_argument("--profiles-dir", default="profiles")
    parser.add_argument("--figures-dir", default=None,
                        help=f"where f saves figures (default: ${FIGURES_ENV}, else ./figures)")  # fmt: skip
    args = parser.parse_args()
    return run_app(args.output_dir, args.profiles_dir, args.figures_dir)


if __name__ == "__main__":
    sys.exit(main())
