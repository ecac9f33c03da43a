# Verify-PD: the two set-up commands are `make run` and `make test`. Each installs what is
# missing (libclang-dev, the CUDA 13.0 compiler into .cuda/, the assets into assets/) and is
# idempotent.
SHELL := /bin/bash
CUDA_LOCAL := $(CURDIR)/.cuda/nvidia/cu13
export CUDA_HOME ?= $(CUDA_LOCAL)
CARGO ?= cargo

.PHONY: run test deps sys-deps cuda assets sdk fixtures clean-assets

# The main job on the embedded default (SmolLM2-135M on the CPU), tools/run.sh: (1) the
# in-process load benchmark, the four policies over a short Poisson sweep; (2) `vpd serve` on a
# free loopback port and `vpd bench --url` against it over streaming HTTP. Each prints its
# table and writes JSON/Markdown/PNG (bench-out/, bench-out/http/).
run: deps
	$(CARGO) build --release --bin vpd
	bash tools/run.sh

test: deps sdk
	$(CARGO) test --workspace --all-targets

deps: sys-deps cuda assets

# The openai Python SDK for the real-client server test (tests/openai_sdk.rs), in a
# project-local venv. Without ensurepip (Debian's python3 minus python3-venv) the venv is made
# without pip and the system pip installs into it.
SDK_VENV := .venv-sdk
sdk: $(SDK_VENV)/.installed
$(SDK_VENV)/.installed:
	@echo "installing the openai SDK into $(SDK_VENV) ..."
	@python3 -m venv $(SDK_VENV) 2>/dev/null && $(SDK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "openai>=1.40,<3" \
		|| { rm -rf $(SDK_VENV) && python3 -m venv --without-pip $(SDK_VENV) && \
		     python3 -m pip install --quiet --disable-pip-version-check --python $(SDK_VENV)/bin/python "openai>=1.40,<3"; }
	@touch $@

# bindgen needs libclang.
sys-deps:
	@if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null && ! compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null; then \
		echo "installing libclang-dev (for bindgen) ..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libclang-dev >/dev/null; \
	fi

# The CUDA 13.0 compiler from the package registry, pinned (an unpinned nvidia-nvvm pulls a
# newer NVVM that this nvcc cannot use).
cuda: $(CUDA_LOCAL)/bin/nvcc
$(CUDA_LOCAL)/bin/nvcc:
	python3 -m pip install --quiet --disable-pip-version-check --target .cuda \
		"nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" \
		"nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.*"
	@test -x $@ && $@ --version | tail -1

assets:
	@bash tools/fetch-assets.sh
