# banger: `make run` runs the default sandbox, `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# uidmap: newuidmap for rootless image builds; python3-venv: `python3 -m venv` on a stock Debian;
# dnsmasq-base: the tests resolve .vm through a real dnsmasq in front of bangerd-dns.
APT_PACKAGES := qemu-system-x86 qemu-utils e2fsprogs busybox-static mmdebstrap uidmap \
	skopeo umoci docker-registry iproute2 nftables iptables cpio kmod zstd gpgv \
	debian-archive-keyring git ca-certificates openssh-client slirp4netns python3-venv \
	dnsmasq-base chromium
# npm fetches the web UI's browser assets (pinned in its package-lock.json); chromium runs its tests.
APT_PACKAGES += $(if $(shell command -v npm),,npm)
ASSETS := src/banger/daemon/webui/assets
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint hooks bench fuzz clean

install: $(STAMP)

# sudo for apt only (when not root); the venv and everything else belong to the user.
$(STAMP): pyproject.toml Makefile $(ASSETS)/package-lock.json
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing host packages: $$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@if command -v npm >/dev/null; then (cd $(ASSETS) && npm ci --omit=dev --no-audit --no-fund -s); \
	else echo "npm not found: the web UI's scripts (htmx) are not installed; pages still render"; fi
	$(PY) -c "from banger.buildinfo import write_build_info as w; \
		import subprocess as s; w(s.run(['git','rev-parse','HEAD'],capture_output=True,text=True).stdout.strip() or 'unknown')"
	touch $(STAMP)

run: install
	$(VENV)/bin/banger vm run --rm -- cat /etc/os-release

test: install lint
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q tests/unit

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

hooks: install
	$(VENV)/bin/pre-commit install

fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q -m fuzz -p no:timeout

bench: install
	$(PY) bench/cli_latency.py

clean:
	rm -rf $(VENV) build *.egg-info
