"""Ray Data driver for the cluster tests and the benchmark.

Connects to the cluster named by ``RAY_ADDRESS``, screens one input with
:func:`earmark.ray.screen` and writes ``earmark scan``'s report and summary
with :func:`earmark.ray.write_report`; prints one JSON line with what the
test checks (nodes in the cluster, nodes that screened, wall time).

    python ray_driver.py --data DIR --input PATH --kind files|parquet|webdataset \
        --report R.jsonl --summary S.json [--actors N] [--actor-cpus C]

``--change-index-with CATALOG`` registers the catalog's works (through the
``earmark`` binary) after :func:`earmark.ray.screen` returned and before the
dataset runs: the actors then find another index generation than the driver
and the run must fail with ``GenerationMismatchError``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import ray

import earmark
import earmark.ray

#: Per kind: how to read the input, its audio column, the item name column,
#: and the report's item kind.
KINDS = {
    "files": ("bytes", "path", "file"),
    "parquet": ("audio", "id", "parquet-row"),
    "webdataset": ("ogg", "__key__", "tar-sample"),
}


def read(kind: str, path: str):
    if kind == "files":
        return ray.data.read_binary_files(path, include_paths=True)
    if kind == "parquet":
        return ray.data.read_parquet(path)
    return ray.data.read_webdataset(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--kind", choices=sorted(KINDS), default="files")
    parser.add_argument("--report", required=True)
    parser.add_argument("--summary")
    parser.add_argument("--purpose", default="ai-training")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--actor-cpus", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--preserve-order", action="store_true")
    parser.add_argument("--change-index-with")
    parser.add_argument("--earmark-bin")
    args = parser.parse_args(argv)

    ray.init(
        address=os.environ.get("RAY_ADDRESS", "auto"),
        _node_ip_address=os.environ.get("EARMARK_RAY_NODE_IP"),
        log_to_driver=False,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = args.preserve_order
    ctx.enable_progress_bars = False
    audio_column, item_column, item_kind = KINDS[args.kind]
    started = time.time()
    ds = read(args.kind, args.input)
    screened = earmark.ray.screen(
        ds,
        args.data,
        audio_column=audio_column,
        purpose=args.purpose,
        concurrency=args.actors,
        num_cpus=args.actor_cpus,
        batch_size=args.batch_size,
        keep_audio=False,
        record_node=True,
    )
    if args.change_index_with:
        subprocess.run(
            [args.earmark_bin, "--data", args.data, "works", "import", args.change_index_with],
            check=True,
            capture_output=True,
        )
        try:
            earmark.ray.write_report(screened, args.report, data_dir=args.data)
        except Exception as err:  # noqa: BLE001 - Ray wraps the actor's exception
            print(json.dumps({"failed": type(err).__name__, "message": str(err)[-2000:]}))
            return 0
        print(json.dumps({"failed": None}))
        return 0
    screened = screened.materialize()
    nodes_used = sorted({row["earmark_node"] for row in screened.select_columns(["earmark_node"]).iter_rows()})
    summary = earmark.ray.write_report(
        screened,
        args.report,
        summary=args.summary,
        data_dir=earmark.Gate(args.data, args.purpose),
        item_column=item_column,
        kind=item_kind,
        source=args.input,
        inputs=[{"path": args.input, "kind": args.kind}],
        jobs=int(args.actors * args.actor_cpus),
        started_at=started,
        member_suffix=audio_column if args.kind == "webdataset" else None,
    )
    wall_s = time.time() - started
    print(
        json.dumps(
            {
                "nodes": sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]),
                "nodes_used": nodes_used,
                "items": summary["items"],
                "audio_hours": summary["audio_hours"],
                "wall_s": wall_s,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
