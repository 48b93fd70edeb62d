#!/bin/sh
# Records examples/sdlc/cassette.json: runs examples/sdlc.cond against the scripted model
# (an OpenAI-compatible server on 127.0.0.1) with `--record`. Run it from the repository root
# after changing a prompt, a role's system prompt or an answer:
#
#     sh examples/sdlc/record.sh
#
# To record from a real model instead, point the default provider at it, e.g.
#     CONDUCTOR_PROVIDERS_DEFAULT_KIND=openai CONDUCTOR_PROVIDERS_DEFAULT_MODEL=gpt-4o-mini \
#     OPENAI_API_KEY=... conductor run examples/sdlc.cond --record my-cassette.json
set -eu
dir=$(mktemp -d)
trap 'kill "$model" 2>/dev/null || true; rm -rf "$dir"' EXIT
python3 examples/sdlc/scripted_model.py --port 0 --port-file "$dir/port" >/dev/null &
model=$!
while [ ! -s "$dir/port" ]; do sleep 0.1; done
rm -f examples/sdlc/cassette.json
CONDUCTOR_PROVIDERS_DEFAULT_KIND=openai \
CONDUCTOR_PROVIDERS_DEFAULT_BASE_URL="http://127.0.0.1:$(cat "$dir/port")/v1" \
CONDUCTOR_PROVIDERS_DEFAULT_MODEL=scripted \
    ${CONDUCTOR:-cargo run --quiet --} --store "$dir/store.db" run examples/sdlc.cond \
    --record examples/sdlc/cassette.json
