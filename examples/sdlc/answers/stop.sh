#!/bin/sh
# Stops the service deploy.sh started, if it still runs.
if [ -f service.pid ] && kill "$(cat service.pid)" 2>/dev/null; then
    rm -f service.pid
    echo '{"stopped": true}'
else
    rm -f service.pid
    echo '{"stopped": false}'
fi
