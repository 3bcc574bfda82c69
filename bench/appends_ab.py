"""A/B of builds of the save path: bench/appends.py's variants run once per build per round, interleaved.

    python bench/appends_ab.py [--rounds 5] [--seconds 5] [--variants plain,ledger] \
        before=/path/to/old/src after=src

Each NAME=SRC is a `src` directory (e.g. `git archive <commit> src | tar -x -C /tmp/old`). Every round runs
`appends.py --rounds 1` once per build, in a process of its own importing that build, the builds in turn
(their order reversed every other round, so that neither always runs first). Each run measures its own
`plain` (INSERT+COMMIT from the same threads) just before the Ledger's saves: the ratio to it is the figure
to compare, as the machine's load moves between runs. Uses LEDGER_DATABASE_URL when set, else an embedded
PostgreSQL in a temporary directory per run. Prints one JSON object: per build, each round's rates and ratios,
and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def run_build(src: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    command = [sys.executable, str(HERE / "appends.py"), "--rounds", "1", "--seconds", str(args.seconds),
               "--threads", str(args.threads), "--variants", args.variants]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{src}: appends.py failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("builds", nargs="+", metavar="NAME=SRC")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--variants", default="plain,ledger", help="appends.py's, `plain` first")
    args = parser.parse_args()
    builds = dict(b.split("=", 1) for b in args.builds)
    names = list(builds)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else reversed(names):
            found = run_build(builds[name], args)
            (rates,) = found["rounds"]
            (ratios,) = found["ratio_per_round"]
            runs[name].append({"per_second": {k: round(v) for k, v in rates.items()}, "ratio": ratios})
            print(f"round {i + 1} {name:<10} {json.dumps(runs[name][-1])}", file=sys.stderr)
    variants = [v for v in args.variants.split(",") if v != "plain"]
    result = {
        "command": "PYTHONPATH=src python bench/appends_ab.py " + " ".join(sys.argv[1:]),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "threads": args.threads,
        "builds": builds,
        "runs": runs,
        "median_ratio": {
            name: {v: statistics.median(r["ratio"][v] for r in runs[name]) for v in variants}
            for name in names
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
