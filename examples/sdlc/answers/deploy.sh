#!/bin/sh
# Starts the inventory service in the background on 127.0.0.1 and prints where it listens.
set -eu
. ./service.env
sh ./stop.sh >/dev/null 2>&1 || true
rm -f service.port
python3 app.py --host "$HOST" --port 0 --port-file service.port --ttl "$TTL_SECONDS" >service.log 2>&1 &
echo $! >service.pid
i=0
while [ ! -s service.port ]; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        echo "the service did not start within 10s; its log:" >&2
        cat service.log >&2
        exit 1
    fi
    sleep 0.1
done
printf '{"url": "http://%s:%s", "pid": %s}\n' "$HOST" "$(cat service.port)" "$(cat service.pid)"
