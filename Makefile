# Two commands for a newcomer: `make demo` and `make test`. Both create or refresh the project
# virtualenv (.venv) when pyproject.toml changed; when nothing changed they start at once.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.fmc-installed
# The CPU wheel of torch 2.13.0 lies on the lab machines' disk; on a GPU box set TORCH_SPEC to the
# build you want, e.g. `make TORCH_SPEC='torch==2.13.0' test` with your own index configured.
TORCH_SPEC ?= torch==2.13.0
# PyTorch's own wheel index for TORCH_SPEC, e.g. https://download.pytorch.org/whl/cpu (empty: pip's).
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: install browser test test-full test-wheel coverage demo lint bench choices clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev,export,monai,napari,zarr,hpo,bioimageio]"
	@touch $(STAMP)

# Headless Chromium for the browser test of report.html (tests/reporting/test_report_html.py):
# Debian's chromium, installed when missing and this is root with apt-get; otherwise (or if the
# install fails) one line says the test will be skipped (FMC_REQUIRE_BROWSER=1 makes it fail).
browser:
	@if command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser test of report.html"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium; } >/dev/null 2>&1 || \
	  echo "chromium could not be installed: the browser test of report.html will be skipped"; \
	else echo "no chromium (install it as root: make browser): the browser test of report.html will be skipped"; fi

test: $(STAMP) browser
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-full: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The CPU benchmarks behind docs/benchmarks.md, at sizes that finish in minutes on 2 cores (about
# 9 min measured). Each prints its machine line and a table to copy into the doc; the full sizes are
# in each script's header and in docs/benchmarks.md. Not here: bench_prepare.py (needs SimpleITK,
# the bench extra), the training studies (bench_loso*, bench_recipe, bench_fallback,
# bench_resample_z: hours) and bench_gpu.py on a GPU.
bench: $(STAMP)
	$(PY) scripts/bench_h5.py
	$(PY) scripts/bench_metrics.py --shape 100 1024 1024
	$(PY) scripts/bench_synth.py
	$(PY) scripts/bench_data.py --shape 120 512 512 --patch 64 256 256 --patches 40
	$(PY) scripts/bench_train.py --steps 60
	$(PY) scripts/bench_predict.py overhead --shape 48 256 256 --patch 32 128 128 --features 16 --depth 3 --batch-size 2 --repeats 1
	$(PY) scripts/bench_gpu.py --sections loader --device cpu

# fmc installed from its wheel, not run from the checkout: build the wheel from a copy of the
# sources (no build/ folder here), install it with its dependencies into a fresh virtualenv
# (TORCH_SPEC first, as `install` does) and run two commands from a folder outside the
# repository, with the embedded dataset's folder (FMC_DATA) in the same scratch folder.
WHEEL_TEST ?= $(or $(TMPDIR),/tmp)/fmc-test-wheel
test-wheel: $(STAMP)
	rm -rf $(WHEEL_TEST) && mkdir -p $(WHEEL_TEST)/src $(WHEEL_TEST)/elsewhere
	cp -R pyproject.toml README.md fmc conf $(WHEEL_TEST)/src/
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEEL_TEST)/dist $(WHEEL_TEST)/src
	$(PYTHON) -m venv $(WHEEL_TEST)/venv
	$(WHEEL_TEST)/venv/bin/pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(WHEEL_TEST)/venv/bin/pip install --quiet $(WHEEL_TEST)/dist/fmc-*.whl
	cd $(WHEEL_TEST)/elsewhere && export FMC_DATA=$(WHEEL_TEST)/data && \
	  ../venv/bin/python -c "import fmc.core.cli as c; print('fmc configs:', c.CONFIG_DIR)" && \
	  ../venv/bin/python -m fmc.train --cfg job study=3 content=nucleus && \
	  ../venv/bin/python -m fmc.predict --help

# Line coverage of fmc by the fast suite (commands in subprocesses included; pyproject.toml).
coverage: $(STAMP)
	$(PY) -m coverage erase
	$(PY) -m coverage run -m pytest -m "not slow" $(PYTEST_ARGS)
	$(PY) -m coverage combine -q || true
	$(PY) -m coverage report --format=total

# docs/choices.md from fmc's registries (networks, losses, channels, formats, ...).
choices: $(STAMP)
	$(PY) -c "from fmc.reporting.choice_lists import choices_markdown; print(choices_markdown(), end='')" > docs/choices.md

lint: $(STAMP)
	$(PY) -m ruff check fmc tests scripts

demo: $(STAMP)
	$(PY) scripts/demo.py

clean-venv:
	rm -rf $(VENV)
