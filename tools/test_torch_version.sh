#!/usr/bin/env bash
# The whole test suite under another torch release, in a venv of its own.  Run before each release
# for every supported torch that CI does not run in full (2.14.1, 2.15.0); record the result in
# docs/TORCH_VERSIONS.md.
#
#   tools/test_torch_version.sh 2.14.1                  # creates .venv-2141 (torch 2.14.1 + test deps), runs the suite
#   tools/test_torch_version.sh 2.15.0 /path/to/venv    # a venv that already holds torch 2.15.0, the test deps
#                                                       # and this checkout (`pip install --no-deps -e .`)
#   tools/test_torch_version.sh 2.14.1 "" -x tests/test_golden.py   # pytest arguments after the venv
#
# torch comes from PyPI (a CUDA build, which runs on the CPU); PIP_CONFIG_FILE=/dev/null lifts this
# machine's pip cap for the two installs into the new venv only, and the second pins the torch so
# that nothing replaces it.  The suite runs from this checkout (PYTHONPATH), with the C extensions
# built in place (`python setup.py build_ext --inplace`, as `pip install -e .` does).
set -uo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: tools/test_torch_version.sh VERSION [VENV [PYTEST ARGS...]]}
venv=${2:-}
venv=${venv:-.venv-${version//./}}
shift $(( $# < 2 ? $# : 2 ))

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || exit 1
  PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install -q "torch==$version" || exit 1
  PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install -q -e '.[test]' "torch==$version" || exit 1
fi
have=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])') || exit 1
if [ "$have" != "$version" ]; then
  echo "$venv holds torch $have, not $version" >&2
  exit 1
fi
if [ ! -x "$venv/bin/initrecipe" ]; then
  # tests/test_diff.py runs `git diff` with the `initrecipe` command of the venv as its textconv.
  echo "$venv has no \`initrecipe\` command: $venv/bin/pip install --no-deps -e ." >&2
  exit 1
fi
echo "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') in $venv; $(uptime)"
PYTHONPATH=$PWD "$venv/bin/python" -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5)" >&2
  exit 1
fi
exit "$rc"
