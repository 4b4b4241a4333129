# The two commands of the README: `make demo` and `make test`.
.PHONY: demo test bootstrap lint bench

bootstrap:
	scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/carewatch demo

test:
	scripts/bootstrap.sh --with-browser
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy carewatch ingest detectors alerts simulators config console routines

bench: bootstrap
	.venv/bin/carewatch bench --quick
