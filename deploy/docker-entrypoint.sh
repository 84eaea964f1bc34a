#!/bin/sh
# Entrypoint of the concordose image: turns secret files into the environment variables Prefect
# and concordose read, then runs the command.
#
# For every variable NAME_FILE whose NAME starts with PREFECT_ or CONCORDOSE_, NAME is set to the
# content of the file it names (a compose secret under /run/secrets/, a mounted Kubernetes
# Secret), without its trailing newline. Secrets so stay out of the image and out of
# `docker inspect`; only the process sees them.
set -eu

for file_variable in $(env | sed -n 's/^\(\(PREFECT\|CONCORDOSE\)_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    path=$(printenv "${file_variable}_FILE")
    if [ ! -r "$path" ]; then
        echo "concordose-entrypoint: ${file_variable}_FILE names $path, which is not a readable file" >&2
        exit 2
    fi
    value=$(cat "$path")
    export "$file_variable=$value"
    unset "${file_variable}_FILE"
done

exec "$@"
