# `make suggest VIDEO=...` and `make test` work on a fresh machine: they
# bootstrap .venv with everything phd needs (ffmpeg comes inside a wheel).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, the build for this machine (scripts/install_torch.py): the CPU
# build where there is no NVIDIA GPU (PyTorch's CPU index; where that cannot be
# reached, pip's own sources, said in one line), else the CUDA build.
# PHD_NVIDIA_GPU=0|1 says whether there is a GPU instead of looking.
TORCH ?= torch==2.13.0

.PHONY: install torch suggest test test-heavy lint bench-quick completions screenshot dist clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python scripts/install_torch.py "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Replace the installed torch by the build for this machine (what `phd doctor`
# says when a CUDA build sits on a machine without an NVIDIA GPU, or the reverse).
torch: $(STAMP)
	$(BIN)/python scripts/install_torch.py --replace "$(TORCH)"

suggest: $(STAMP)
	@test -n "$(VIDEO)" || (echo "usage: make suggest VIDEO=path-or-URL [ARGS='-k 5 --out gifs']" >&2; exit 2)
	$(BIN)/phd suggest "$(VIDEO)" $(ARGS)

# The default suite: within 4 minutes on 2 cores. The slowest tests are listed
# at the end, so that a slow one is seen when it arrives.
test: $(STAMP)
	$(BIN)/ruff check phdcli tests bench scripts
	$(BIN)/pytest -q --durations=15

test-heavy: $(STAMP)
	$(BIN)/pytest -q -m heavy --durations=15

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

completions: $(STAMP)
	$(BIN)/python scripts/gen_completions.py

# The README's picture of a report: the browser test's own page and screenshot.
screenshot: $(STAMP)
	PHD_REPORT_SCREENSHOT=$(CURDIR)/docs/report.png $(BIN)/pytest -q tests/test_report.py -k chromium

# The sdist and the wheel (with the bundled model and its card) in dist/.
dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) .pytest_cache build dist
