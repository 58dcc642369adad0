#!/usr/bin/env bash
# The Python package's tests (README, "Python"): builds one abi3 wheel of
# crates/logcollect-py with maturin, installs it with the test requirements
# in a virtual environment per interpreter (under target/python-ci, inside
# the clone; nothing is cached elsewhere), and runs pytest against the
# RabbitMQ on 127.0.0.1:5672 on each interpreter.
#
# Usage: scripts/python_test.sh [pytest args...]
#   LOGCOLLECT_PYTHONS  interpreter versions to test (default "3.12 3.11 3.13")
#
# A listed interpreter that cannot be found is an error: the package's
# promise is tested on each of them.
set -euo pipefail
cd "$(dirname "$0")/.."

root="$(pwd)"
work="$root/target/python-ci"
versions="${LOGCOLLECT_PYTHONS:-3.12 3.11 3.13}"
pip_quiet=(--disable-pip-version-check -q)

# python<version> from PATH when it runs, else from pyenv's versions
# directory (pyenv's shims refuse a version that is not selected).
find_python() {
    local v="$1" c
    if c="$(command -v "python$v" 2>/dev/null)" && "$c" -c 'pass' >/dev/null 2>&1; then
        echo "$c"
        return 0
    fi
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    for c in "$pyenv_root"/versions/"$v".*/bin/"python$v"; do
        if [ -x "$c" ] && "$c" -c 'pass' >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

venv_for() {
    local v="$1" py venv="$work/venv-$1"
    # A venv's scripts name its own path: one moved with target/ (or made by
    # another checkout) cannot run its pip, so it is made again.
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/pip" --version >/dev/null 2>&1; then
        if ! py="$(find_python "$v")"; then
            echo "python_test: error: no Python $v found (on PATH or under pyenv's versions); install it or set LOGCOLLECT_PYTHONS" >&2
            exit 1
        fi
        echo "== python $v: venv with $py" >&2
        "$py" -m venv --clear "$venv" >&2
    fi
    echo "$venv"
}

mkdir -p "$work"
first="${versions%% *}"
builder="$(venv_for "$first")"
"$builder/bin/pip" install "${pip_quiet[@]}" 'maturin>=1.9.4,<2'
echo "== maturin build (one abi3 wheel for every interpreter)"
rm -rf "$work/wheels"
"$builder/bin/maturin" build --quiet -m crates/logcollect-py/Cargo.toml -o "$work/wheels"
wheel="$(ls "$work"/wheels/logcollect-*.whl)"

status=0
for v in $versions; do
    venv="$(venv_for "$v")"
    echo "== python $v: install the wheel and the test requirements"
    "$venv/bin/pip" install "${pip_quiet[@]}" -r crates/logcollect-py/pytests/requirements.txt
    "$venv/bin/pip" install "${pip_quiet[@]}" --force-reinstall --no-deps "$wheel"
    echo "== python $v: pytest"
    # Run from the tests' directory so that nothing imports the package
    # from the source tree instead of the installed wheel.
    (cd crates/logcollect-py/pytests && "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@") || status=$?
done
exit "$status"
