#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet; quick when all are.
set -euo pipefail
missing=()
for package in "$@"; do dpkg -s "$package" > /dev/null 2>&1 || missing+=("$package"); done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "apt-install: installing ${missing[*]}"
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
$sudo apt-get install -y -qq "${missing[@]}" > /dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" > /dev/null; }
