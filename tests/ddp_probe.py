"""``python tests/ddp_probe.py <train args>`` (under torchrun or alone): train, recording what each rank did.

Wraps the real training entry point and writes ``$TRACKEMB_PROBE_DIR/rank<r>.json`` with the
batches this rank trained on (step, rank, patch rows) and every output it wrote (checkpoint,
config.json, TensorBoard writer), so tests/test_train.py can compare a DDP run with a
single-process run and check that only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from trackemb.embedding import data, monitor, train

seen: list[dict[str, Any]] = []
wrote: list[str] = []
_getitem, _save, _config, _tb = (
    data.PairBatchDataset.__getitem__, train.save_checkpoint, train.write_config_json, monitor.TensorBoardWriter.__init__,
)  # fmt: skip


def _record_batch(self: data.PairBatchDataset, spec: data.BatchSpec) -> dict[str, Any]:
    seen.append({"step": spec.step, "rank": spec.rank, "rows": spec.rows.tolist()})
    return _getitem(self, spec)


def _recorder(what: str, real: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        wrote.append(what)
        return real(*args, **kwargs)

    return call


data.PairBatchDataset.__getitem__ = _record_batch  # type: ignore[method-assign]
train.save_checkpoint = _recorder("checkpoint", _save)
train.write_config_json = _recorder("config.json", _config)
monitor.TensorBoardWriter.__init__ = _recorder("tensorboard", _tb)  # type: ignore[method-assign]
try:
    train.main(sys.argv[1:])
finally:
    out = Path(os.environ["TRACKEMB_PROBE_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
    out.write_text(json.dumps({"batches": seen, "wrote": wrote}))
