"""Calls per operation: DynamoDB request units and Management API posts, at two table sizes.

The measurement is tests/support/operation_costs.py (tests/test_call_counts.py checks the
same figures at 10 and 1,000 sessions); this prints its table and writes the results.

    .venv/bin/python bench/call_counts.py [--sizes 10 100000]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchlib import ROOT, print_table, write_results

sys.path[:0] = [str(ROOT / "layers" / "relay")]

from tests.support.operation_costs import comparable, measure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[10, 100_000], metavar=("SMALL", "LARGE"))
    arguments = parser.parse_args(argv)
    small, large = arguments.sizes
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    populate_seconds: dict[int, float] = {}
    for size in (small, large):
        by_size[size], populate_seconds[size] = measure(size)
        print(f"  {size:>7} existing sessions: populated in {populate_seconds[size]:.1f} s", file=sys.stderr)

    rows = []
    identical = True
    for name, few in by_size[small].items():
        many = by_size[large][name]
        same = comparable(few) == comparable(many)
        identical &= same
        calls = ", ".join(f"{count} {op}" for op, count in few["calls"].items()) or "-"
        rows.append(
            [
                name,
                calls,
                f"{few['read_units']:g}",
                f"{few['write_units']:g}",
                few["posts"],
                few["api_gateway_messages"],
                f"{many['read_units']:g} / {many['write_units']:g} / {many['posts']}",
                "yes" if same else "NO",
            ]
        )
    print(f"Calls per operation with {small} and with {large:,} existing sessions")
    print_table(
        [
            "operation",
            f"DynamoDB calls ({small})",
            "read units",
            "write units",
            "posts",
            "API GW messages",
            f"RRU / WRU / posts at {large:,}",
            "identical",
        ],
        rows,
    )
    browser_send = by_size[large]["send browser -> mac"]
    target = browser_send["read_units"] == 1 and browser_send["write_units"] == 0 and browser_send["posts"] == 1
    print(
        f"identical at both sizes: {'yes' if identical else 'NO'}; browser -> mac at 1 read unit and 1 post: "
        f"{'yes' if target else 'NO'}"
    )
    path = write_results(
        "call_counts",
        {
            "sizes": [small, large],
            "identical": identical,
            "browser_to_mac_target_met": target,
            "populate_seconds": populate_seconds,
            "figures": {str(size): figures for size, figures in by_size.items()},
        },
    )
    print(f"results: {path.relative_to(ROOT)}")
    return 0 if identical and target else 1


if __name__ == "__main__":
    raise SystemExit(main())
