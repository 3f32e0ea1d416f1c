#!/usr/bin/env bash
# Download, here, the wheels that a lent GPU machine lacks, into .whl/ (git-ignored), for benchmarks/on_device.sh.
#
# The device's python3 (3.12, with torch, torchvision, matplotlib, scipy, tqdm, safetensors, jinja2, pygments,
# psutil, ...) cannot reach any package index, and has neither diffusers (benchmarks/references.py) nor a
# Jupyter kernel and nbconvert (the notebooks' full runs). These pins are the versions CI uses here; the
# list was closed over their Requires-Dist against the device image's package list (about 24 MB in all).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 \
  nbconvert==7.17.2 nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 jupyter_client==8.10.0 \
  jupyter_core==5.9.1 pyzmq==27.3.0 tornado==6.6.1 traitlets==5.15.0 nest-asyncio2==1.7.4 comm==0.2.3 \
  debugpy==1.8.22 ipython==8.12.3 jedi==0.20.0 parso==0.8.7 prompt_toolkit==3.0.52 wcwidth==0.7.0 \
  pexpect==4.8.0 ptyprocess==0.7.0 decorator==5.2.1 stack-data==0.6.3 asttokens==3.0.1 executing==2.2.1 \
  pure_eval==0.2.3 matplotlib-inline==0.2.2 backcall==0.2.0 pickleshare==0.7.5 fastjsonschema==2.22.3 \
  jsonschema==4.26.0 referencing==0.37.0 rpds-py==0.30.0 jsonschema-specifications==2025.9.1 mistune==3.4.0 \
  bleach==6.4.0 webencodings==0.6.1 tinycss2==1.5.1 pandocfilters==1.5.1 defusedxml==0.7.1 \
  beautifulsoup4==4.15.0 soupsieve==4.1.3 jupyterlab_pygments==0.3.0 platformdirs==4.14.8 \
  ipywidgets==8.1.9 widgetsnbextension==4.0.16 jupyterlab_widgets==3.0.17
# MNIST travels too (the device cannot download it): the four files, as the package reads them.
mkdir -p .data/MNIST/raw
cp -n "${MNIST_RAW:-../shared/data/MNIST/raw}"/*.gz .data/MNIST/raw/
du -sh .whl .data
