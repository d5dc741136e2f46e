# Two entry points for a fresh machine: `make run` (install + start the app) and `make test`.
# The virtual environment is reused until a requirements file or pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8501

.PHONY: run test install install-test chromium clean default-task

# `streamlit run app.py` that also starts the default's work with the server (slsviz/app/serve.py).
run: $(VENV)/.installed
	$(BIN)/python -m slsviz app --server.headless true --server.address 127.0.0.1 \
		--server.port $(PORT) --browser.gatherUsageStats false

test: $(VENV)/.installed-test chromium
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(BIN)/python -m pip install -q -r requirements-test.txt
	touch $@

# Browser tests drive Debian's chromium (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "chromium not installed and apt unavailable: browser tests will be skipped"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache

# Re-create the shipped default task (DINOv2 ViT-S/14 + Convpass on mnist5k train800) on this machine.
DEFAULT_TASK_ARGS ?= --epochs 40 --warmup-epochs 4 --method convpass --data mnist5k --device auto
default-task: $(VENV)/.installed
	$(BIN)/python -m slsviz train $(DEFAULT_TASK_ARGS) --out assets/default_task.safetensors > assets/default_task.json
