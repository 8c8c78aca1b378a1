# delegate — one command for the demo, one for the tests.
# Both add the wasm32-wasip2 target first (RUSTUP_AUTO_INSTALL may be off).

CARGO ?= cargo
GUESTS := -p delegate-sdk -p echo -p hostile -p probe-sandbox -p probe-credentials -p servicenow-agent -p dispatcher

.PHONY: setup demo test lint fmt ci bench bench-python python-stack interop js-guest js-test py-guest py-test

setup:
	rustup target add wasm32-wasip2

## The main job: run the whole chain locally (see README).
demo: setup
	$(CARGO) run --release --locked -p delegate -- demo

## Every test: unit, end-to-end (real servers on loopback), CLI.
test: setup
	$(CARGO) test --locked --no-fail-fast
	$(CARGO) test --locked --no-fail-fast -p delegate-sdk -p servicenow-agent -p dispatcher
	# The criterion micro benches, each benchmark run once (criterion's test mode), so a bench
	# that no longer works fails here rather than on the day someone measures.
	$(CARGO) test --locked --no-fail-fast -p delegate-auth --bench verify -p delegate-vault --bench cache_hit -p delegate-egress --bench egress -p delegate-e2e --bench foundation

## Formatting and lints, host (native) and guests (wasm32-wasip2).
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip2 $(GUESTS) -- -D warnings

fmt:
	$(CARGO) fmt --all

## What CI runs.
ci: lint test interop

## Benchmarks, built as the image ships (`production` profile: release + fat LTO, one codegen
## unit; the first build takes ~8-15 min on 2 cores); figures go to BENCHMARKS.md.
bench: setup
	$(CARGO) bench --locked --profile production -p delegate-e2e -p delegate-auth -p delegate-vault -p delegate-egress -p delegate-model -p delegate

## Side by side: the load bench against the article's Python agent (Strands, BedrockModel,
## BedrockAgentCoreApp under uvicorn; host/cli/benches/python-stack, pinned), on the same
## devstack; `make bench` (or its `-p delegate --bench load` part) gives delegate's figures.
PY_STACK_VENV := target/python-stack-venv
PY_STACK := host/cli/benches/python-stack
bench-python: setup python-stack
	$(CARGO) bench --locked --profile production -p delegate --bench load -- --python $(abspath $(PY_STACK_VENV))/bin/python

python-stack:
	python3 -m venv $(PY_STACK_VENV)
	$(PY_STACK_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(PY_STACK)/requirements.txt -c $(PY_STACK)/constraints.txt

## Interop: real, independent client libraries (PyPI) against the devstack stand-ins:
## MSAL + PyJWT → IdP, boto3 → Bedrock endpoint, pysnc → ServiceNow sandbox; PyYAML checks
## deploy/k8s and `delegate config check` validates its delegate.toml.
INTEROP_VENV := target/interop-venv
interop: setup
	python3 -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/pip install --quiet --disable-pip-version-check msal 'pyjwt[crypto]' boto3 pysnc pyyaml
	$(CARGO) build --locked -p delegate-devstack-idp --example devstack-idp -p delegate-devstack-bedrock --example serve
	env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE DEVSTACK_IDP_BIN=target/debug/examples/devstack-idp $(INTEROP_VENV)/bin/python tests/interop/msal_idp.py
	env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE $(INTEROP_VENV)/bin/python tests/interop/boto3_bedrock.py
	$(CARGO) build --locked -p delegate
	$(INTEROP_VENV)/bin/python tests/interop/k8s_manifests.py
	PYSNC_PYTHON=$(abspath $(INTEROP_VENV))/bin/python $(CARGO) test --locked -p delegate-devstack-servicenow --lib -- --ignored pysnc

## The ServiceNow agent in JavaScript (guest/servicenow-agent-js): npm ci (node 20, npm registry
## only), its node unit tests, then componentize-js → target/wasm-guests/js/servicenow_agent_js.wasm.
JS_GUEST_DIR := guest/servicenow-agent-js
JS_GUEST := target/wasm-guests/js/servicenow_agent_js.wasm
js-guest:
	cd $(JS_GUEST_DIR) && npm ci --no-audit --no-fund && npm test && node build.mjs $(abspath $(JS_GUEST))

## The Jane e2e suite against the JavaScript agent.
js-test: setup js-guest
	DELEGATE_JS_GUEST=$(abspath $(JS_GUEST)) $(CARGO) test --locked -p delegate-e2e --test e2e jane_js

## The ServiceNow agent in Python (guest/servicenow-agent-py): a venv with the pinned
## componentize-py (PyPI only), its unit tests, then componentize-py against wit/ →
## target/wasm-guests/py/servicenow_agent_py.wasm.
PY_GUEST := target/wasm-guests/py/servicenow_agent_py.wasm
py-guest:
	PY_GUEST_OUT=$(PY_GUEST) guest/servicenow-agent-py/build.sh

## The Jane e2e suite and the hostile checks against the Python agent.
py-test: setup py-guest
	DELEGATE_PY_GUEST=$(abspath $(PY_GUEST)) $(CARGO) test --locked -p delegate-e2e --test e2e jane_py
