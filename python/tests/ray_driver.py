"""Ray Data driver for the cluster tests and the benchmark.

Connects to the cluster named by ``RAY_ADDRESS``, screens one input with
:func:`earmark.ray.screen` and writes ``earmark scan``'s report and summary
with :func:`earmark.ray.write_report`; prints one JSON line with what the
test checks (nodes in the cluster, nodes that screened, wall time), also
to ``--facts FILE`` when given (Ray may print to stdout too).

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

#: How long the run waits for its actors to start (seconds).
ACTOR_START_TIMEOUT_S = 300

#: Per kind: how to read the input, its audio column, the item name column,
#: and the report's item kind.
KINDS = {
    "files": ("bytes", "path", "file"),
    "parquet": ("audio", "id", "parquet-row"),
    "webdataset": ("ogg", "__key__", "tar-sample"),
}


def read(kind: str, path: str, blocks: int):
    """The input as a dataset of at least `blocks` blocks (files: one per
    file), so the batches spread over every actor."""
    if kind == "files":
        ds = ray.data.read_binary_files(path, include_paths=True, override_num_blocks=blocks)
    elif kind == "parquet":
        ds = ray.data.read_parquet(path)
    else:
        ds = ray.data.read_webdataset(path)
    return ds if kind == "files" else ds.repartition(blocks)


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
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--preserve-order", action="store_true")
    parser.add_argument("--change-index-with")
    parser.add_argument("--earmark-bin")
    parser.add_argument("--facts", help="also write the JSON line here")
    args = parser.parse_args(argv)

    ray.init(
        address=os.environ.get("RAY_ADDRESS", "auto"),
        _node_ip_address=os.environ.get("EARMARK_RAY_NODE_IP"),
        log_to_driver=False,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = args.preserve_order
    ctx.enable_progress_bars = False
    # Start every actor before data flows, so batches spread over all of them
    # (and so over both nodes) even on a corpus this small.
    ctx.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    audio_column, item_column, item_kind = KINDS[args.kind]
    started = time.time()
    ds = read(args.kind, args.input, args.blocks)
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
            return tell(args, {"failed": type(err).__name__, "message": str(err)[-2000:]})
        return tell(args, {"failed": None})
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
    return tell(
        args,
        {
            "nodes": sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]),
            "nodes_used": nodes_used,
            "items": summary["items"],
            "audio_hours": summary["audio_hours"],
            "wall_s": wall_s,
        },
    )


def tell(args, facts) -> int:
    line = json.dumps(facts)
    print(line)
    if args.facts:
        with open(args.facts, "w") as out:
            out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
