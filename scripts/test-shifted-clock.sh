#!/usr/bin/env bash
# The whole test suite once more, with the process clock moved more than a year ahead and into
# Madrid summer time (15 July), through libfaketime (Debian's faketime package): no test may
# depend on today's date, the season or the machine's time zone. The offset is counted from
# today, so it lands in summer whenever this runs. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=""
for candidate in /usr/lib/*/faketime/libfaketimeMT.so.1; do
    [ -e "$candidate" ] && lib=$candidate && break
done
if [ -z "$lib" ]; then
    echo "test-shifted-clock: libfaketime is missing; install it with: apt-get install faketime" >&2
    exit 1
fi
days=$(python3 - <<'PY'
import datetime
today = datetime.date.today()
july = datetime.date(today.year + 1, 7, 15)
if (july - today).days <= 365:
    july = datetime.date(today.year + 2, 7, 15)
print((july - today).days)
PY
)
echo "test-shifted-clock: the clock moved $days days ahead, to $(date -u -d "+$days days" +%F)"
LD_PRELOAD="$lib" FAKETIME="+${days}d" scripts/test.sh -p no:cacheprovider "$@"
