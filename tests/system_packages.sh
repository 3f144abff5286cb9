#!/usr/bin/env bash
# What the tests need from the system: a PostgreSQL server and a Redis server (the tests start
# their own of each), and Debian's Chromium (the dashboard tests open the pages in it through
# Playwright, which never downloads a browser here). As root they are installed with apt;
# otherwise the one command to run is printed and the tests stop before they start.
set -euo pipefail

need=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  need+=(redis-server)
fi
if ! command -v chromium >/dev/null 2>&1; then
  need+=(chromium chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "the tests need the Debian packages ${need[*]}: run  sudo apt-get install -y ${need[*]}  and then make test again" >&2
  exit 1
fi
echo "installing system packages the tests need: ${need[*]}"
apt-get update -qq
# A Debian install starts a cluster (and a Redis) of its own; the tests start their own servers.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
