# The README's two commands are `make demo` and `make test`.
# Both build the environment in .venv/ at the repository root.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test system-packages venv clean install

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# setuptools 82+ dropped pkg_resources; we never import it, but editable installs need a known-good setuptools.
	$(VENV)/bin/pip install --quiet --upgrade pip 'setuptools<82' wheel
	$(VENV)/bin/pip install --quiet -e '.[test]'
	# The benchmark's peer; --no-deps so it uses dlib-bin instead of building dlib from source.
	$(VENV)/bin/pip install --quiet --no-deps face_recognition
	touch $(STAMP)

venv: $(STAMP)

system-packages:
	bash scripts/system-packages.sh

demo: $(STAMP)
	bash scripts/system-packages.sh demo
	$(VENV)/bin/bytelocker demo

test: system-packages $(STAMP)
	$(VENV)/bin/python -m pytest -q

# Install or upgrade on this machine (root): make install INSTALL_ARGS="--role door --start"
install:
	bash scripts/install.sh $(INSTALL_ARGS)

clean:
	rm -rf $(VENV) *.egg-info
