#!/usr/bin/env bash
# Build the Fuse My Cells challenge container and save it as grand-challenge expects.
#
#   scripts/build_container.sh REGISTRY [TAG]
#
# REGISTRY: a folder with models.yaml, or a training sweep's output folder (each run's best
# checkpoint is taken). The image runs `python -m fmc.challenge`; the saved image is
# <TAG>.tar.gz in the current folder (docker save | gzip), ready to upload.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 REGISTRY [TAG]" >&2
    exit 2
fi
registry=$1
tag=${2:-fmc-challenge}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
[[ -x $python ]] || python=python3

if ! command -v docker >/dev/null; then
    echo "$0: docker is not installed here" >&2
    exit 2
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp -r "$repo/fmc" "$repo/conf" "$repo/pyproject.toml" "$repo/README.md" "$repo/Dockerfile" "$context/"
find "$context" -name __pycache__ -prune -exec rm -rf {} +
"$python" -c "import sys; from fmc.inference.registry import export_registry; print(export_registry(sys.argv[1], sys.argv[2]))" \
    "$registry" "$context/models"

docker build --tag "$tag" "$context"
# A smoke run without network on an empty case folder proves the entry point starts.
docker run --rm --network none --entrypoint python "$tag" -c "import fmc.challenge, fmc.inference.registry; \
fmc.inference.registry.ModelRegistry.from_folder('/opt/fmc/models')"
docker save "$tag" | gzip > "$tag.tar.gz"
echo "saved $(pwd)/$tag.tar.gz"
