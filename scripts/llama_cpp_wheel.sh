#!/usr/bin/env bash
# llama-cpp-python for jobs/quantize.py's tests. PyPI has only its source distribution, and compiling it takes
# about 8 minutes on 2 cores, so the wheel is built once into a cache outside the repository and installed
# from there: CI runs in a fresh clone, on a machine that keeps $HOME between runs. The source distribution
# stays in the same cache, where the job and the tests find llama.cpp's converter.
#
# Usage: scripts/llama_cpp_wheel.sh [PYTHON]   (default .venv/bin/python; cache: $QMD_CACHE or ~/.cache/qmd-expand)
set -euo pipefail
version=0.3.36  # the pin in jobs/quantize.py (LLAMA_CPP_PYTHON and its PEP 723 header)
python=${1:-.venv/bin/python}
cache=${QMD_CACHE:-$HOME/.cache/qmd-expand}
sdist="$cache/llama_cpp_python-$version.tar.gz"
mkdir -p "$cache/wheels"
if [ ! -f "$sdist" ]; then
    echo "llama-cpp-python $version: downloading the source distribution into $cache"
    "$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$cache"
fi
installed=$("$python" -c "from importlib.metadata import version; print(version('llama-cpp-python'))" 2>/dev/null || true)
[ "$installed" = "$version" ] && exit 0
wheel=$(ls "$cache"/wheels/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    echo "llama-cpp-python $version: building a wheel from source (about 8 minutes on 2 cores), once"
    start=$(date +%s)
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF" "$python" -m pip wheel --quiet --no-deps -w "$cache/wheels" "$sdist"
    echo "llama-cpp-python $version: built in $(( $(date +%s) - start ))s"
    wheel=$(ls "$cache"/wheels/llama_cpp_python-"$version"-*.whl | head -n 1)
fi
"$python" -m pip install --quiet "$wheel"
echo "llama-cpp-python $version: installed from $wheel"
