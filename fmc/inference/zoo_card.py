"""The model card of a BioImage Model Zoo package (its README.md, also written beside the zip).

What a bioimage analyst needs before using the model: what it does, its inputs and how to compute
the distance channels, what stays in fmc, its weights, its training configuration and the run's
scores (:func:`fmc.inference.packages.run_score_lines`).
"""

from __future__ import annotations

from pathlib import Path

from fmc.inference.packages import run_score_lines, sha256_of


def distance_scales(module) -> list[float]:
    """The µm scale of each distance channel of ``module``, in input order."""
    from fmc.data.patches import CHANNELS

    stored = dict(module.hparams.get("channel_scales_um") or {})
    return [float(stored.get(name, CHANNELS[name].default_scale_um))
            for name in module.hparams.channels[1:]]


def study_label(model, separator: str) -> str:
    """``study 3``, or ``studies 1<sep>2<sep>5`` for a model trained on several."""
    study = model.hparams.get("study")
    if isinstance(study, (list, tuple)):
        return "studies " + separator.join(str(s) for s in study)
    return f"study {study}"


def zoo_card(model, checkpoint: Path) -> str:
    """The package's README.md: what the model does, its inputs and how to compute them, its
    training configuration and the run's scores."""
    hp = model.hparams
    from fmc.data.patches import CHANNELS

    distance_lines = [
        f"- `{name}`: {CHANNELS[name].description.split(' → ')[0]}; the H5 dataset `data/{name}` that\n"
        "  `python -m fmc.prepare input=RAW_DIR output=H5_DIR` writes for each view; the\n"
        f"  network applies tanh(d / {scale:g} µm) itself"
        for name, scale in zip(hp.channels[1:], distance_scales(model), strict=True)]
    settings = {key: hp.get(key) for key in ("network", "features", "depth", "norm", "residual",
                                            "confidence", "loss", "lr", "patch_size",
                                            "spacing_zyx", "fallback")}
    return "\n".join([
        f"# fmc: {study_label(model, ', ')}; {hp.get('content')}", "",
        "A 3D network that turns one light-sheet view into the quality of a multi-view fusion",
        "(Fuse My Cells challenge, ISBI 2025), trained with `fmc` (`python -m fmc.train`).", "",
        "## Inputs", "",
        "- `raw`: the view as recorded. The package normalises it to (x - p2) / (p99.8 - p2)",
        "  per sample; give the whole volume (as fmc does), not tiles normalised on their own.",
        *distance_lines, "",
        "## Output", "",
        "- `fused`: the predicted fusion on the view's normalised scale.", "",
        "## What stays in fmc", "",
        "`python -m fmc.predict ckpt=CHECKPOINT input=... output=...` applies the same network",
        "with a blended sliding window, computes the distance channels from the view, applies",
        f"the whole-volume input fallback (`{hp.get('fallback', 'none')}`), which a zoo tile",
        "function cannot, and writes float32 or, with `output_dtype=uint16`, the view's range.", "",
        "## Weights", "",
        "- `pytorch_state_dict` (the architecture: `fmc_network.py`, generated from fmc's own "
        "network code; its environment: `environment.yaml`"
        + (", MONAI included" if hp.get("network", "unet3d") != "unet3d" else ", torch only")
        + ") and `torchscript` (no Python code needed)", "",
        "## Training", "",
        f"- checkpoint `{checkpoint.name}` (sha256 {sha256_of(checkpoint)[:16]}…)",
        *(f"- {key}: {value}" for key, value in settings.items()),
        *run_score_lines(checkpoint), "",
        f"Trained on {study_label(model, ', ')}: on recordings of other microscopes or specimens,",
        "check the score first (fmc's leave-one-study-out table in its docs/benchmarks.md).", ""])
