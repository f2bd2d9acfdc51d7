#!/usr/bin/env bash
# A virtualenv with an older langgraph-checkpoint-redis, for running harness/agents.py against
# the Redis layout that version writes. Idempotent: the venv is (re)built only when it is
# missing, was made with another Python, or its requirements file changed. Prints the path
# of the venv's python on stdout (everything else goes to stderr).
#
#   scripts/saver-venv.sh VERSION            e.g. 0.1.3 or 0.2.1
#   PYTHON=python3.12 scripts/saver-venv.sh 0.2.1
#
# Installs tests/savers/requirements-VERSION.txt into .venv-savers/VERSION under the repo.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${1:-}"
if [ -z "$version" ] || [ "$#" -ne 1 ]; then
    known=""
    for f in "$repo"/tests/savers/requirements-*.txt; do
        [ -e "$f" ] || continue
        f="${f##*/requirements-}"
        known="$known ${f%.txt}"
    done
    echo "usage: $0 VERSION   (one of:$known)" >&2
    exit 2
fi
requirements="$repo/tests/savers/requirements-$version.txt"
if [ ! -f "$requirements" ]; then
    echo "saver-venv: no $requirements" >&2
    exit 1
fi
python="${PYTHON:-python3.11}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "saver-venv: $python not found; set PYTHON to a Python 3.11 or newer" >&2
    exit 1
fi

root="$repo/.venv-savers"
venv="$root/$version"
stamp="$venv/.saver-venv-requirements"
want="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

mkdir -p "$root"
# keep the virtualenvs out of git without editing the repo's .gitignore
[ -f "$root/.gitignore" ] || printf '*\n' >"$root/.gitignore"

have=""
if [ -x "$venv/bin/python" ]; then
    have="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
fi
if [ "$have" = "$want" ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
    echo "$venv/bin/python"
    exit 0
fi

if [ "$have" != "$want" ]; then
    echo "saver-venv: creating $venv with $python ($want)" >&2
    "$python" -m venv --clear "$venv" >&2
fi
rm -f "$stamp"
echo "saver-venv: installing $requirements" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
cp "$requirements" "$stamp"
echo "$venv/bin/python"
