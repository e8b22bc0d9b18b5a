"""Cold start: each function's init (import + first-invocation clients) against its floor.

For every folder of functions/, a fresh interpreter imports the handler module with the
function's environment from template.yaml and creates the AWS clients its first
invocation creates (see cold_start_child.py); its floor is a fresh interpreter that
imports boto3 and creates the same clients, and nothing else. Runs are interleaved
(every function, then every floor, round after round) so that a busy neighbour slows
both sides alike. The target is judged on CPU time, which a loaded machine disturbs
far less than wall time; both are reported. The verdict uses the median, over rounds,
of the function's CPU time divided by its floor's in the same round.

    .venv/bin/python bench/cold_start.py [--runs 10] [--jobs 2] [--root DIR]

--root measures another checkout (e.g. `git archive <rev> | tar -x -C DIR`) with this
virtualenv, which is how the "before" figures in docs/PERFORMANCE.md were taken.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import LAMBDA_ENVIRONMENT, ROOT, Function, functions, median, print_table, write_results

CHILD = Path(__file__).resolve().parent / "cold_start_child.py"
TARGET_RATIO = 1.25


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: only what Lambda would set, plus what the interpreter needs."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **LAMBDA_ENVIRONMENT, **extra}


def run_child(arguments: list[str], environment: dict[str, str], python: str = sys.executable) -> dict[str, Any]:
    completed = subprocess.run(
        [python, str(CHILD), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"cold start of {arguments} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def function_task(function: Function, layer: Path) -> tuple[list[str], dict[str, str]]:
    module = function.handler.rsplit(".", 1)[0]
    environment = child_environment(
        {
            **function.environment,
            "AWS_LAMBDA_FUNCTION_NAME": f"bench-{function.name}",
            # Functions no WebSocket event reaches (the TTL stream, the grace queue) get
            # their Management API endpoint this way on AWS too.
            **(
                {"AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI": "https://example.execute-api.us-east-1.amazonaws.com/prod"}
                if function.name in ("expiry", "grace")
                else {}
            ),
        }
    )
    return ["function", str(function.code_uri), str(layer), module], environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="measured runs per function and floor")
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (default: 2)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--only", nargs="*", default=None, help="function folders to measure")
    parser.add_argument("--label", default="cold_start", help="results file name (bench/results/LABEL.json)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the measured processes, e.g. a python3.13 virtualenv with the layer's "
        "requirements and boto3 (Lambda's runtime); default: this one",
    )
    arguments = parser.parse_args(argv)
    root = arguments.root.resolve()
    layer = root / "layers" / "relay"
    selected = [f for f in functions(root) if arguments.only is None or f.name in arguments.only]

    tasks = {f.name: function_task(f, layer) for f in selected}
    with ThreadPoolExecutor(max_workers=arguments.jobs) as pool:
        # The first run of each function is not counted: it compiles the .pyc files
        # and tells which clients the function creates, hence which floor it has.
        first = dict(
            zip(tasks, pool.map(lambda t: run_child(t[0], t[1], python=arguments.python), tasks.values()), strict=True)
        )
        floors = {tuple(report["clients"]) for report in first.values()}
        for clients in floors:
            tasks[floor_name(clients)] = (["floor", *clients], child_environment({}))
        samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for _ in range(arguments.runs):
            names = list(tasks)
            reports = pool.map(lambda n: run_child(tasks[n][0], tasks[n][1], python=arguments.python), names)
            for name, report in zip(names, reports, strict=True):
                samples[name].append(report)

    rows = []
    version = subprocess.run(
        [arguments.python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    results: dict[str, Any] = {
        "runs": arguments.runs,
        "jobs": arguments.jobs,
        "measured_python": version,
        "root": str(root),
        "functions": {},
        "floors": {},
    }
    for clients in sorted(floors):
        name = floor_name(clients)
        results["floors"][name] = summarise(samples[name])
    for function in selected:
        summary = summarise(samples[function.name])
        floor_label = floor_name(tuple(first[function.name]["clients"]))
        floor = results["floors"][floor_label]
        # Each round ran the function and its floor close together: the ratio within a
        # round cancels the load a busy machine adds to both.
        paired = [
            run["cpu_ms"] / floor_run["cpu_ms"]
            for run, floor_run in zip(samples[function.name], samples[floor_label], strict=True)
        ]
        summary["floor"] = floor_label
        summary["cpu_ratio_of_medians"] = round(summary["cpu_ms_median"] / floor["cpu_ms_median"], 3)
        summary["cpu_ratio_paired_median"] = round(median(paired), 3)
        summary["cpu_ratio_of_minimums"] = round(summary["cpu_ms_min"] / floor["cpu_ms_min"], 3)
        summary["wall_ratio_of_medians"] = round(summary["wall_ms_median"] / floor["wall_ms_median"], 3)
        summary["meets_target"] = summary["cpu_ratio_paired_median"] <= TARGET_RATIO
        summary["factory"] = first[function.name]["factory"]
        results["functions"][function.name] = summary
        rows.append(
            [
                function.name,
                ", ".join(first[function.name]["clients"]) or "(none)",
                f"{summary['cpu_ms_median']:.0f}",
                f"{floor['cpu_ms_median']:.0f}",
                f"{summary['cpu_ratio_paired_median']:.2f}x",
                f"{summary['cpu_ratio_of_medians']:.2f}x",
                f"{summary['cpu_ratio_of_minimums']:.2f}x",
                f"{summary['wall_ms_median']:.0f} / {floor['wall_ms_median']:.0f}",
                str(summary["modules"]),
                ", ".join(summary["heavy_modules"]) or "-",
                "yes" if summary["meets_target"] else "NO",
            ]
        )
    print(
        f"Cold start on Python {version}: {arguments.runs} fresh processes each (CPU ms, medians); "
        f"target: paired CPU ratio <= {TARGET_RATIO}x"
    )
    print_table(
        [
            "function",
            "clients created",
            "CPU",
            "floor CPU",
            "paired ratio",
            "ratio of medians",
            "ratio of minimums",
            "wall / floor wall",
            "modules",
            "heavy modules loaded",
            "meets target",
        ],
        rows,
    )
    path = write_results(arguments.label, results)
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


def floor_name(clients: tuple[str, ...]) -> str:
    return "floor[" + "+".join(clients) + "]" if clients else "floor[boto3 only]"


def summarise(reports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cpu_ms_median": round(median([r["cpu_ms"] for r in reports]), 1),
        "cpu_ms_min": round(min(r["cpu_ms"] for r in reports), 1),
        "wall_ms_median": round(median([r["wall_ms"] for r in reports]), 1),
        "cpu_ms_samples": [round(r["cpu_ms"], 1) for r in reports],
        "modules": reports[0]["modules"],
        "heavy_modules": reports[0]["heavy_modules"],
    }


if __name__ == "__main__":
    raise SystemExit(main())
