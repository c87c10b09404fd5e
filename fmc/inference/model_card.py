"""The model cards fmc writes, from one set of facts per model: beside a TorchScript/ONNX export
(:func:`export_card`), as a BioImage Model Zoo package's README.md (:func:`zoo_card`) and in a
model package shared with ``fmc.registry`` (:func:`package_card`).

Every card tells a reader the same things about each model (:func:`model_facts`): its study and
content, its input channels and how to compute them (from their specs,
:mod:`fmc.preprocessing.channel_specs`), the network and its settings, the training patch,
spacing and fallback, the checkpoint (with its sha256) and the training run's scores
(:func:`run_score_lines`). Only what is particular to the artefact (tensor layouts, what the
package's tile function leaves to fmc) is written by each card's own function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from fmc.core.naming import METRICS_FILE
from fmc.inference.registry import sha256_of

# The training settings every card lists, in this order.
TRAINING_KEYS = ("network", "features", "depth", "norm", "residual", "confidence", "loss", "lr",
                 "patch_size", "spacing_zyx", "fallback")


def study_label(model_or_hparams, separator: str) -> str:
    """``study 3``, or ``studies 1<sep>2<sep>5`` for a model trained on several."""
    hp = getattr(model_or_hparams, "hparams", model_or_hparams)
    study = hp.get("study")
    if isinstance(study, (list, tuple)):
        return "studies " + separator.join(str(s) for s in study)
    return f"study {study}"


def distance_scales(module) -> list[float]:
    """The µm scale of each distance channel of ``module`` (those after the view), in input
    order: the checkpoint's, else the channel spec's default."""
    from fmc.preprocessing.channel_specs import channel_scales

    scales = {**channel_scales(), **dict(module.hparams.get("channel_scales_um") or {})}
    return [float(scales[name]) for name in module.hparams.channels[1:]]


def input_lines(hp: Mapping) -> list[str]:
    """One bullet per input channel, in order: what it is and how fmc computes it."""
    from fmc.preprocessing.channel_specs import CHANNELS, channel_scales

    scales = {**channel_scales(), **dict(hp.get("channel_scales_um") or {})}
    lines = []
    for index, name in enumerate(hp.get("channels") or []):
        spec = CHANNELS[name]
        if not spec.scaled:
            lines.append(f"- channel {index}: {name} — {spec.description}")
        else:
            lines.append(f"- channel {index}: {name} — tanh(d / {scales.get(name)} µm), d the "
                         f"{spec.description}, from `python -m fmc.prepare` (H5 dataset "
                         f"{spec.dataset})")
    return lines


def run_score_lines(checkpoint: Path) -> list[str]:
    """Markdown bullets of the scores of the training run that wrote ``checkpoint`` (its
    ``metrics.json``: best validation and test N_SSIM, run name, steps); none when not found."""
    metrics = Path(checkpoint).parent.parent / METRICS_FILE
    if not metrics.is_file():
        return []
    scores = json.loads(metrics.read_text())
    shown = {k: v for k, v in scores.items() if k.startswith(("best/val", "test/n_ssim"))
             and isinstance(v, (int, float))}
    return [*(f"- {key}: {value:+.4f}" for key, value in sorted(shown.items())),
            f"- run: {scores.get('run_name')}, {scores.get('global_step')} steps"]


def model_facts(hp: Mapping, checkpoint: Path, scores_from: Path | None = None) -> list[str]:
    """The bullets every card gives of one model: study and content, inputs, training settings,
    the checkpoint and its sha256, the run's scores (of ``scores_from``'s run, default
    ``checkpoint``'s)."""
    return [f"- {study_label(hp, ', ')}, content {hp.get('content')}",
            *input_lines(hp),
            *(f"- {key}: {hp.get(key)}" for key in TRAINING_KEYS),
            f"- checkpoint `{Path(checkpoint).name}` (sha256 {sha256_of(Path(checkpoint))[:16]}…)",
            *run_score_lines(scores_from or checkpoint)]


def _card(title: str, intro: Sequence[str], sections: Sequence[tuple[str, Sequence[str]]]
          ) -> str:
    """Markdown: the title, an introduction, then each ``(heading, lines)`` section."""
    lines = [f"# {title}", "", *intro, ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", *body, ""]
    return "\n".join(lines)


def export_card(model, checkpoint: Path, fmt: str, path: Path, difference: float,
                tolerance: float) -> str:
    """The card beside an exported file: its tensors, what it leaves to fmc, the check."""
    hp = model.hparams
    return _card(path.name, [
        f"{fmt} export of `{checkpoint.name}` (fmc: one light-sheet view → its multi-view fusion;",
        f"{study_label(model, ', ')}, content {hp.get('content')})."], [
        ("Tensors", [
            "- input `input`: float32 (N, C, Z, Y, X); Z, Y, X multiples of "
            f"{model.net.required_divisor}; trained on {list(hp.patch_size)} tiles at "
            f"{hp.get('spacing_zyx')} µm",
            *(f"  {line}" for line in input_lines(hp)),
            "- output `output`: float32 (N, 1, Z, Y, X), normalised intensities (the view's scale)",
            "- not included: the sliding window over a whole volume, and the input fallback "
            f"`{hp.get('fallback', 'none')}` (whole-volume; `python -m fmc.predict ckpt=...` "
            "applies both)",
            f"- checked: largest |export − checkpoint| on a {list(hp.patch_size)} tile = "
            f"{difference:.2e} (limit {tolerance:g})"]),
        ("Model", model_facts(hp, checkpoint))])


def zoo_card(model, checkpoint: Path) -> str:
    """A BioImage Model Zoo package's README.md: what the model does, the package's inputs and
    how to compute them, what stays in fmc, its weights, and the model's facts."""
    from fmc.preprocessing.channel_specs import CHANNELS

    hp = model.hparams
    distance_lines = [
        f"- `{name}`: {CHANNELS[name].description}; the H5 dataset `{CHANNELS[name].dataset}` that\n"
        "  `python -m fmc.prepare input=RAW_DIR output=H5_DIR` writes for each view; the\n"
        f"  network applies tanh(d / {scale:g} µm) itself"
        for name, scale in zip(hp.channels[1:], distance_scales(model), strict=True)]
    return _card(f"fmc: {study_label(model, ', ')}; {hp.get('content')}", [
        "A 3D network that turns one light-sheet view into the quality of a multi-view fusion",
        "(Fuse My Cells challenge, ISBI 2025), trained with `fmc` (`python -m fmc.train`)."], [
        ("Inputs", [
            "- `raw`: the view as recorded. The package normalises it to (x - p2) / (p99.8 - p2)",
            "  per sample; give the whole volume (as fmc does), not tiles normalised on their own.",
            *distance_lines]),
        ("Output", ["- `fused`: the predicted fusion on the view's normalised scale."]),
        ("What stays in fmc", [
            "`python -m fmc.predict ckpt=CHECKPOINT input=... output=...` applies the same network",
            "with a blended sliding window, computes the distance channels from the view, applies",
            f"the whole-volume input fallback (`{hp.get('fallback', 'none')}`), which a zoo tile",
            "function cannot, and writes float32 or, with `output_dtype=uint16`, the view's range."]),
        ("Weights", [
            "- `pytorch_state_dict` (the architecture: `fmc_network.py`, generated from fmc's own "
            "network code; its environment: `environment.yaml`"
            + (", MONAI included" if hp.get("network", "unet3d") != "unet3d" else ", torch only")
            + ") and `torchscript` (no Python code needed)"]),
        ("Training", [
            *model_facts(hp, checkpoint), "",
            f"Trained on {study_label(model, ', ')}: on recordings of other microscopes or "
            "specimens, check the score first (fmc's leave-one-study-out table in its "
            "docs/benchmarks.md)."])])


def package_card(models: Sequence[tuple[str, Mapping, Path, Path]]) -> str:
    """A model package's MODEL_CARD.md: one section per ``(name, hyperparameters, checkpoint,
    checkpoint whose run has the scores)``."""
    return _card("fmc model package", [
        "Models of `fmc` (one light-sheet view to a multi-view fusion). Predict with",
        "`python -m fmc.predict ckpt=auto registry=models.zip input=... output=...`; each",
        "volume gets the model of its study and content (see `models.yaml`); several models",
        "of one study and content are averaged (an ensemble)."],
        [(name, model_facts(hp, checkpoint, scores_from))
         for name, hp, checkpoint, scores_from in models])
