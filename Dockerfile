# The Fuse My Cells challenge container: python -m fmc.challenge on grand-challenge's I/O folders.
# Build with scripts/build_container.sh REGISTRY (it prepares the build context and saves the
# image as the challenge expects). No network is used at run time.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WANDB_MODE=disabled \
    FMC_LOG_DIR=/tmp/fmc-challenge

RUN groupadd --system user && useradd --system --gid user --create-home user

WORKDIR /opt/fmc/app
# The base image's CUDA torch satisfies fmc's torch pin, so pip keeps it.
COPY pyproject.toml README.md ./
COPY fmc ./fmc
COPY conf ./conf
RUN python -m pip install --no-cache-dir -e . && python -c "import fmc.challenge"

# Weights: a folder with models.yaml, written by scripts/build_container.sh from a registry.
COPY --chown=user:user models /opt/fmc/models

USER user
ENTRYPOINT ["python", "-m", "fmc.challenge"]
