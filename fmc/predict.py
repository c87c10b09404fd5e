"""``python -m fmc.predict``: apply a checkpoint to TIFF volumes (see ``conf/predict.yaml``).

Thin entry point; logic in :mod:`fmc.prediction` and :mod:`fmc.tiling`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fmc.cli import hydra_entry

log = logging.getLogger("fmc.predict")


@hydra_entry("predict", "fmc.predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from fmc.prediction import (
        PredictSettings,
        device_for,
        input_files,
        load_model,
        predict_file,
    )

    files = input_files(cfg.input)
    model = load_model(cfg.ckpt, device_for(str(cfg.device)))
    settings = PredictSettings(patch=None if cfg.patch is None else tuple(int(p) for p in cfg.patch),
                               overlap=float(cfg.overlap), batch_size=int(cfg.batch_size),
                               weighting=str(cfg.weighting), progress=bool(cfg.progress))
    output = Path(cfg.output)
    for source in files:
        written = predict_file(model, source, output, settings)
        log.info("wrote %s", written)
    print(f"predicted {len(files)} volume(s) into {output}")


if __name__ == "__main__":
    main()
