# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# GraphiQL's files, pinned in cloud/api/graphql/assets.py, from the npm registry.
ASSETS := cloud/api/graphql/static/vendor/.fetched

.PHONY: demo test lint typecheck imports unscoped pytest venv web client clean image image-test

$(STAMP): pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) is required"; exit 2; }
	infra/dev-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cloud,s3,vsphere,libvirt,ec2,demo,dev]'
	touch $(STAMP) $(DEMO_STAMP)

# What `make demo` needs and no more: the cloud, the mail sink, the agent's vSphere driver
# (for vcsim) and its libvirt driver (built against libvirt's headers: Debian's libvirt-dev
# and pkg-config; without them the demo watches vcsim alone). The full install covers it too.
DEMO_STAMP := $(VENV)/.installed-demo
DEMO_PACKAGES := golang-go golang-github-vmware-govmomi-dev libvirt-dev pkg-config
# libvirt's extra only where its headers are (dev-packages.sh may just have put them).
DEMO_EXTRAS = cloud,demo,vsphere$$(pkg-config --exists libvirt 2>/dev/null && echo ,libvirt)

$(DEMO_STAMP): pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) is required"; exit 2; }
	infra/dev-packages.sh $(DEMO_PACKAGES) || echo "make: the demo goes on without them"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(DEMO_EXTRAS)]"
	touch $(DEMO_STAMP)

# The chunker's C scan, built again when its source changes (pip built it with the venv).
CDC := agent/vault/_cdc$(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))" 2>/dev/null)

$(CDC): $(DEMO_STAMP) agent/vault/_cdc.c
	$(BIN)/python setup.py -q build_ext --inplace 2>/dev/null
	touch $(CDC)

$(ASSETS): $(DEMO_STAMP) cloud/api/graphql/assets.py
	$(BIN)/python -m dockyard.cloud.api.graphql.assets
	touch $(ASSETS)

# The tenant portal (web/): npm ci when the lockfile changes, then codegen from the committed
# SDL, tsc, the component tests and the build into cloud/portal/static/ (shipped in the
# package, never committed), again whenever a source or the schema changes.
NODE_STAMP := web/node_modules/.installed
PORTAL     := cloud/portal/static/index.html
WEB_SRC    := $(shell find web/src web/public -type f -not -path 'web/src/gql/*' 2>/dev/null) \
              web/index.html web/vite.config.ts web/codegen.ts web/tsconfig.json

$(NODE_STAMP): web/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: Node.js 20.19+ and npm are needed to build the portal"; exit 2; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(PORTAL): $(NODE_STAMP) $(WEB_SRC) cloud/api/graphql/schema.graphql
	cd web && npm run --silent codegen && npm run --silent typecheck && npm test --silent && npm run --silent build
	touch $(PORTAL)

web: $(PORTAL)

venv: $(STAMP) $(ASSETS) $(CDC) $(PORTAL)

# vcsim (govmomi's vCenter simulator, our launcher in tests/peers/vcsim) takes the demo's
# story on to archive and restore; built where Go and Debian's govmomi sources are, else the
# demo runs on libvirt's test host alone and says so.
DEMO_VCSIM := build/demo/vcsim

$(DEMO_VCSIM): tests/peers/vcsim/main.go
	@mkdir -p $(dir $@)
	@if command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/github.com/vmware/govmomi ]; then \
	    echo "building vcsim for the demo (a minute the first time)"; \
	    cd tests/peers/vcsim && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= \
	        GOCACHE=$(abspath build/peers/go-cache) go build -o $(abspath $@) main.go; \
	else echo "make: no Go or govmomi sources: the demo runs without vcsim (no archive)"; fi

# Ctrl-C stops the demo, which says so and exits 0; it holds the terminal's foreground for
# its own process group meanwhile, so make gets no SIGINT and exits 0 too (cloud/demo.py).
demo: $(DEMO_STAMP) $(ASSETS) $(CDC) $(PORTAL) $(DEMO_VCSIM)
	$(BIN)/dockyard demo --data .demo $$(test -x $(DEMO_VCSIM) && echo --vcsim $(DEMO_VCSIM))

# The MSP client (cloud/client/, dockyard.cloud.client), generated from the committed SDL and
# cloud/client/operations.graphql by ariadne-codegen. The generator runs from a venv of its
# own, filled by the project venv's pip from pyproject's `codegen` group: its pins clash
# with strawberry's graphql-core. Stale modules go first, so a dropped operation leaves none.
# `make test` makes the generator's venv before the tests (the drift test needs it).
CODEGEN := build/codegen-venv

$(CODEGEN)/bin/ariadne-codegen: pyproject.toml
	test -x $(CODEGEN)/bin/python || $(PYTHON) -m venv --without-pip $(CODEGEN)
	$(BIN)/python -m pip --python $(CODEGEN)/bin/python install -q --group codegen
	touch $@

client: $(STAMP) $(CODEGEN)/bin/ariadne-codegen
	rm -f cloud/client/*.py
	$(CODEGEN)/bin/ariadne-codegen client --config pyproject.toml

# The type checker sees the installed names (dockyard.cloud, dockyard.agent) through a tree
# of links, since mypy cannot follow setuptools' editable import hook.
build/typecheck/dockyard:
	mkdir -p build/typecheck/dockyard
	ln -sfn ../../../cloud build/typecheck/dockyard/cloud
	ln -sfn ../../../agent build/typecheck/dockyard/agent

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) build/typecheck/dockyard
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p dockyard.cloud -p dockyard.agent

# import-linter, like mypy, reads the installed names from the tree of links.
imports: $(STAMP) build/typecheck/dockyard
	cd build/typecheck && PYTHONPATH=. ../../$(BIN)/lint-imports ../../pyproject.toml

unscoped:
	@echo "Uses of the tenancy escape hatch, unscoped(reason):"
	@grep -rn --include='*.py' 'unscoped(' cloud | grep -v 'def unscoped' || true

# The portal's browser tests photograph every page here (artifacts, not committed).
SCREENSHOTS ?= build/screenshots

pytest: $(STAMP) $(ASSETS) $(CDC) $(PORTAL) $(CODEGEN)/bin/ariadne-codegen
	DOCKYARD_SCREENSHOTS=$(abspath $(SCREENSHOTS)) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck imports unscoped pytest

# Container images of the cloud and the agent, from Debian's packages and the wheels built
# here, with no container registry (infra/image/build.sh; root). Slow (minutes: a Debian root
# per image), so never part of `make test`; `make image-test` runs them with podman.
IMAGE_DIR ?= build/image

image: $(STAMP) $(ASSETS) $(CDC) $(PORTAL)
	infra/image/packages.sh
	PYTHON=$(BIN)/python infra/image/build.sh $(IMAGE_DIR) cloud agent

image-test: image
	DOCKYARD_IMAGE_DIR=$(abspath $(IMAGE_DIR)) $(BIN)/python -m pytest tests/integration/test_image.py -q $(PYTEST_ARGS)

clean:
	rm -rf build .demo .pytest_cache .mypy_cache .ruff_cache cloud/portal/static
