#!/usr/bin/env bash
# Build the site and take screenshots of the home page, one rule page and the API page with
# headless Chromium (Debian: apt-get install chromium), to look at what a reader sees.
#   bash docs/screenshots.sh [OUT_DIR]      (default: docs/_build/screenshots)
# MathJax comes from its CDN unless SPIKEGRAD_DOCS_MATHJAX points at a local tex-chtml.js
# (e.g. from `npm install mathjax@3`: node_modules/mathjax/es5/tex-chtml.js); offline, the
# formulas then render too.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/_build/screenshots}
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
mkdir -p "$out"
.venv/bin/python -m sphinx -q -W -n --keep-going -b html docs docs/_build/html
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
for page in index rules/na api; do
  name=${page//\//_}
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size=1280,1800 \
    --virtual-time-budget=5000 --screenshot="$out/$name.png" \
    "file://$PWD/docs/_build/html/$page.html" >/dev/null 2>&1
  echo "$out/$name.png"
done
