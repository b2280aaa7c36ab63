#!/usr/bin/env bash
# Build the C scheduling core with AddressSanitizer and UndefinedBehaviorSanitizer in
# a temporary copy of the package, run tests/scheduling against that build, and fail
# on any sanitizer report. Extra arguments go to pytest.
#
#   bash cicd/scheduling/core/sanitize.sh [PYTEST ARGS ...]
#
# Needs gcc with libasan and libubsan (Debian: gcc and its libasan8, libubsan1).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The copy contains the package and the tests it needs, without any built module, so
# Python can only load the sanitized one.
cp -r "$root/cicd" "$work/cicd"
find "$work/cicd" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
mkdir "$work/tests"
cp "$root/pyproject.toml" "$work/"
cp "$root/tests/__init__.py" "$root/tests/conftest.py" "$work/tests/"
cp -r "$root/tests/scheduling" "$work/tests/scheduling"

cd "$work"
CICD_SCHEDULER_SANITIZE=1 python3 cicd/scheduling/core/build.py --tmpdir "$work" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; echo "sanitize.sh: the sanitized build failed" >&2; exit 1; }

libasan=$(gcc -print-file-name=libasan.so)
if [[ ! -e $libasan ]]; then
    echo "sanitize.sh: libasan.so not found (gcc -print-file-name gave $libasan)" >&2
    exit 1
fi
# ASan must be loaded before anything else in an uninstrumented python3. Python's
# own allocations at exit are not leaks worth reporting, so leak checks are off.
# Reports go to files as well, so a report that did not stop the process still fails.
export LD_PRELOAD=$libasan
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$work/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$work/ubsan"
export PYTHONMALLOC=malloc  # let ASan see the buffers cffi allocates

loaded=$(python3 -c 'import cicd.scheduling.core._native as m; print(m.__file__)')
if [[ $loaded != "$work"/* ]]; then
    echo "sanitize.sh: python3 loaded $loaded instead of the sanitized build" >&2
    exit 1
fi

status=0
python3 -m pytest -p no:cacheprovider -q tests/scheduling "$@" || status=$?
unset LD_PRELOAD
reports=$(find "$work" -maxdepth 1 \( -name 'asan.*' -o -name 'ubsan.*' \))
if [[ -n $reports ]]; then
    cat $reports >&2
    echo "sanitize.sh: sanitizer reports above" >&2
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "sanitize.sh: tests failed under the sanitizers (exit $status)" >&2
fi
exit $status
