"""Read back an offline W&B run (``wandb/offline-run-*/run-*.wandb``) as a test would see it
in the W&B runs table: name, group, job type, tags, summary, config keys and table keys.

The file is W&B's transaction log, LevelDB's log format: a 7-byte header (``:W&B``, magic
0xBEE1, version 0), then 32 KiB blocks of records, each a 7-byte header (CRC32, length,
type: 1 full, 2 first, 3 middle, 4 last) and a chunk of a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
FILE_HEADER = 7
RECORD_HEADER = 7


def records(path: Path) -> list[Any]:
    """The protobuf records of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    found, pending, offset = [], b"", FILE_HEADER
    while offset + RECORD_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < RECORD_HEADER:
            offset += left_in_block  # zero padding to the next block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + RECORD_HEADER])
        chunk = data[offset + RECORD_HEADER:offset + RECORD_HEADER + length]
        offset += RECORD_HEADER + length
        if kind == 0 and length == 0:
            continue
        if len(chunk) < length:
            break  # still being written
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


@dataclass
class OfflineRun:
    """What the W&B runs table shows of one offline run."""

    folder: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config_keys: set[str] = field(default_factory=set)
    logged_keys: set[str] = field(default_factory=set)
    finished: bool = False


def read_offline_run(folder: Path) -> OfflineRun:
    """One ``offline-run-*`` folder's run (the last value of each field wins)."""
    run = OfflineRun(folder)
    for record in records(next(Path(folder).glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name = r.display_name or run.name
            run.group = r.run_group or run.group
            run.job_type = r.job_type or run.job_type
            run.tags = list(r.tags) or run.tags
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                run.summary[key] = json.loads(item.value_json)
        elif kind == "config":
            run.config_keys |= {item.key for item in record.config.update}
        elif kind == "history":
            run.logged_keys |= {item.key or "/".join(item.nested_key)
                                for item in record.history.item}
        elif kind == "exit":
            run.finished = True
    return run


def offline_runs(root: Path, timeout: float = 60.0) -> list[OfflineRun]:
    """Every offline run under ``root``, once each has its exit record (W&B's service process
    may still be writing when the command returns)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [read_offline_run(folder) for folder in sorted(Path(root).rglob("offline-run-*"))]
        if all(run.finished for run in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)
