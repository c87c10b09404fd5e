"""``python -m fmc.predict``: apply a checkpoint (or a registry of them) to volumes.

See ``conf/predict.yaml`` (its sliding-window keys: ``conf/inference/default.yaml``). Thin entry
point; logic in :mod:`fmc.inference.runner`, :mod:`fmc.inference.prediction`,
:mod:`fmc.inference.tiling` and :mod:`fmc.inference.registry`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fmc.core.cli import hydra_entry
from fmc.reporting.choice_lists import choices_text

log = logging.getLogger("fmc.predict")


@hydra_entry("predict", "fmc.predict", help_text=lambda: choices_text("predict"))
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from fmc.inference.predict_settings import settings_from
    from fmc.inference.runner import (
        ModelPicker,
        check_inputs,
        check_output_folder,
        input_files,
        predict_files,
    )

    settings = settings_from(cfg)
    files = input_files(cfg.input)
    check_inputs(files, Path(str(cfg.output)), settings.output_format)
    picker = ModelPicker.from_config(cfg.ckpt, cfg.registry, str(cfg.device))
    output = check_output_folder(cfg.output)
    result = predict_files(files, picker, output, settings)  # on_error=fail: stops at the first
    print(f"predicted {result.predicted} volume(s) into {output}")


if __name__ == "__main__":
    main()
