# mixedstack: `make demo` records the bundled example, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo-output

.PHONY: install demo test test-agent bench fp-python ft-python current-python programs numeric browser terminal consumers clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The demo wants CPython 3.13+ (its perf_jit support gives Python frames without
# frame pointers); it takes the newest one pyenv has, else python3.
DEMO_PYTHON ?= $(shell ls -d "$$(pyenv root 2>/dev/null)"/versions/3.1[3-9]*/bin/python3.1[3-9] 2>/dev/null | sort -V | tail -1)
ifeq ($(strip $(DEMO_PYTHON)),)
DEMO_PYTHON := python3
endif

demo: install
	@mkdir -p $(DEMO_DIR)
	$(BIN)/mixedstack record --force -o $(DEMO_DIR)/perf.data -- $(DEMO_PYTHON) examples/app.py
	$(BIN)/mixedstack fold --kernel $(DEMO_DIR)/perf.data -o $(DEMO_DIR)/app.folded
	@echo "Hottest stacks (samples weighted by time, ns):"
	@awk '{print $$NF "\t" $$0}' $(DEMO_DIR)/app.folded | sort -rn | head -8 | cut -f2- | cut -c1-220
	@echo "Files: $(DEMO_DIR)/perf.data (recording), $(DEMO_DIR)/perf.data.d/ (its jitted code and maps), $(DEMO_DIR)/app.folded (folded stacks)"
	$(BIN)/mixedstack flamegraph $(DEMO_DIR)/perf.data -o $(DEMO_DIR)/app.svg --title "mixedstack demo: examples/app.py"
	@echo "Flame graph (open it in a browser): $(abspath $(DEMO_DIR)/app.svg)"

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# CPython's own regression tests (generators, exceptions, threading, sys, settrace,
# fork, asyncio, ...) with our trampoline agent active, on each pyenv CPython 3.8-3.12.
test-agent: $(VENV)/.test-installed
	$(BIN)/python tests/agent_regrtest.py

# A CPython 3.13 with frame pointers (Debian trixie source, ~3 min) for the
# frame-pointer mode tests; they skip without it outside CI.
fp-python:
	tests/tools/build-python.sh fp

# A free-threaded CPython 3.13 (--disable-gil, the same source, ~3 min): python3.13t, for
# the lock-wait tests; they skip without it outside CI.
ft-python:
	tests/tools/build-python.sh ft

# Debian sid's CPython 3.14 and 3.15 binaries (stripped, GCC 16, LTO), with and without
# their -dbg symbols, into ~/.cache/mixedstack/current-python (~30 s, ~550 MB); the
# tests on them skip without it outside CI.
current-python:
	tests/tools/current-python.sh

# Third-party programs for tests/programs/test_programs.py (pytest running networkx's own tests),
# pure Python, into ~/.cache/mixedstack/programs; those tests skip without it outside CI.
PROGRAMS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mixedstack/programs
programs: $(STAMP)
	@if cmp -s tests/programs.txt "$(PROGRAMS)/programs.txt"; then echo "programs already installed: $(PROGRAMS)"; else \
	  rm -rf "$(PROGRAMS)" && $(BIN)/pip install --quiet --target "$(PROGRAMS)" --python-version 3.13 --only-binary=:all: -r tests/programs.txt && \
	  cp tests/programs.txt "$(PROGRAMS)/programs.txt"; fi

# numpy (OpenBLAS) and py-spy for 3.13, PyTorch (MKL) for 3.11: the kernels without unwind
# information that tests/record/test_numeric.py records (~1 GB, ~1 min); those tests skip
# without them outside CI.
NUMERIC := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mixedstack/numeric
numeric: $(STAMP)
	@if cat tests/numeric.txt tests/numeric-torch.txt | cmp -s - "$(NUMERIC)/numeric.txt"; then echo "numeric packages already installed: $(NUMERIC)"; else \
	  rm -rf "$(NUMERIC)" && \
	  $(BIN)/pip install --quiet --target "$(NUMERIC)/cp313" --python-version 3.13 --only-binary=:all: -r tests/numeric.txt && \
	  $(BIN)/pip install --quiet --target "$(NUMERIC)/cp311" --python-version 3.11 --only-binary=:all: -r tests/numeric-torch.txt && \
	  cat tests/numeric.txt tests/numeric-torch.txt > "$(NUMERIC)/numeric.txt"; fi

# Speed and overhead, side by side in one run; FLAMEGRAPH_DIR=checkout adds stackcollapse-perf.pl.
# The package is byte-compiled first, as pip does on install (PYTHONDONTWRITEBYTECODE
# would otherwise make every run compile it again, ~30 ms).
bench: $(VENV)/.test-installed
	$(BIN)/python -m compileall -q mixedstack
	$(BIN)/python bench/run.py

# Debian's Chromium for the browser test (tests/renderers/test_flamegraph_browser.py, which
# skips without it outside CI); CI runs this before make test. Needs root.
browser:
	@if command -v chromium >/dev/null; then chromium --version; else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }; \
	fi

# tmux, the terminal tests/cli/test_top.py runs `mixedstack top` in (it skips without it
# outside CI). Needs root.
terminal:
	@if command -v tmux >/dev/null; then tmux -V; else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q tmux || { apt-get update -q && apt-get install -y -q tmux; }; \
	fi

# The programs that read our outputs, for tests/renderers/test_consumers.py: Debian's golang-go
# (go tool pprof), nodejs and npm; then, from the npm registry the machine is set up with,
# the speedscope app and the Firefox Profiler's importer (tests/consumers/package.json) into
# ~/.cache/mixedstack/consumers. Those tests skip without them outside CI. Needs root for apt.
CONSUMERS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mixedstack/consumers
consumers:
	@missing=""; command -v go >/dev/null || missing="$$missing golang-go"; \
	  command -v node >/dev/null || missing="$$missing nodejs"; command -v npm >/dev/null || missing="$$missing npm"; \
	  if [ -n "$$missing" ]; then export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; }; fi
	@if cmp -s tests/consumers/package.json "$(CONSUMERS)/package.json" && [ -d "$(CONSUMERS)/node_modules/speedscope" ]; then \
	  echo "consumers already installed: $(CONSUMERS)"; else \
	  rm -rf "$(CONSUMERS)" && mkdir -p "$(CONSUMERS)" && cp tests/consumers/package.json "$(CONSUMERS)/" && \
	  cd "$(CONSUMERS)" && npm install --no-package-lock --no-audit --no-fund --loglevel=error; fi

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
