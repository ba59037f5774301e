#!/usr/bin/env bash
# The MGIMM plugin's pictures from the real QGIS desktop -> docs/qgis_dock.png, docs/qgis_processing.png
#
#   scripts/qgis_desktop_screenshots.sh [PYTHON]
#
# PYTHON: the interpreter where mgimm-geo is installed (default: python3 on PATH). Needs QGIS, Xvfb,
# xdotool and ImageMagick (scripts/setup_qgis_env.sh installs them). What it does, as a user would:
# builds the plugin ZIP (qgis_plugin/build_zip.py) and installs it into a fresh QGIS profile the way
# "Install from ZIP" does (unpacked into the profile's python/plugins, enabled in QGIS3.ini, with the
# worker set to this mgimm-geo and the embedded demo model); writes the demo scene and its AOIs; starts
# QGIS under Xvfb with them; drags a rectangle over the first AOI object with the "Describe a drawn
# rectangle" tool (xdotool) over the AOI object nearest the scene's centre; takes the window after the description arrives; opens the Processing
# dialog of "Describe regions" and takes that too. scripts/qgis_desktop_driver.py is QGIS's side.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-$(command -v python3)}"
MGIMM="$(dirname "$PY")/mgimm-geo"
[ -x "$MGIMM" ] || { echo "no mgimm-geo next to $PY: install mgimm-geo there (pip install -e .)" >&2; exit 2; }
WORK="$(mktemp -d /tmp/mgimm_shots.XXXXXX)"
PROFILES="$WORK/profiles"
PLUGINS="$PROFILES/default/python/plugins"
mkdir -p "$PLUGINS" "$PROFILES/default/QGIS"

python3 "$REPO/qgis_plugin/build_zip.py" -o "$WORK/mgimm_geo_qgis.zip"
python3 -m zipfile -e "$WORK/mgimm_geo_qgis.zip" "$PLUGINS"          # what Install from ZIP does
env -u PYTHONPATH "$PY" -c "import sys; from training.synthetic.demo_inputs import write_demo_inputs; \
write_demo_inputs(sys.argv[1], seed=2024)" "$WORK/demo"
cat > "$PROFILES/default/QGIS/QGIS3.ini" <<INI
[PythonPlugins]
mgimm_geo=true

[mgimm_geo]
mode=worker
worker_command=$MGIMM worker
layer_path=$WORK/descriptions.gpkg
max_new_tokens=80

[qgis]
checkVersion=false
allowVersionCheck=false
showTips=false
showTips322=false
newsfeed\\disabled=true

[UI]
hidesplash=true
INI

export MGIMM_SHOT_DIR="$WORK"
wait_for() {  # a file the driver writes; failed.json (the driver's error) ends the run
  for _ in $(seq 1 600); do
    [ -e "$WORK/$1" ] && return 0
    [ -e "$WORK/failed.json" ] && { cat "$WORK/failed.json" >&2; exit 1; }
    sleep 0.5
  done
  echo "timed out waiting for $1 (QGIS log: $WORK/qgis.log)" >&2; exit 1
}
xvfb-run -a -s "-screen 0 1400x900x24" bash -c '
  set -euo pipefail
  qgis --profiles-path "'"$WORK"'" --nologo --noversioncheck --code "'"$REPO"'/scripts/qgis_desktop_driver.py" \
       "'"$WORK"'/demo/scene.tif" "'"$WORK"'/demo/aoi.geojson" > "'"$WORK"'/qgis.log" 2>&1 &
  QGIS_PID=$!
  '"$(declare -f wait_for)"'
  WORK="'"$WORK"'"
  wait_for drag.json
  read -r X1 Y1 X2 Y2 < <(python3 -c "import json; d = json.load(open(\"$WORK/drag.json\")); print(*d[\"from\"], *d[\"to\"])")
  xdotool mousemove "$X1" "$Y1" mousedown 1
  for i in 1 2 3 4 5; do xdotool mousemove $(( X1 + (X2 - X1) * i / 5 )) $(( Y1 + (Y2 - Y1) * i / 5 )); sleep 0.1; done
  xdotool mouseup 1
  wait_for described.json
  import -window root "'"$REPO"'/docs/qgis_dock.png"
  touch "$WORK/shot1.done"
  wait_for processing.json
  CROP=$(python3 -c "import json; print(json.load(open(\"$WORK/processing.json\"))[\"crop\"])")
  import -window root -crop "$CROP" +repage "'"$REPO"'/docs/qgis_processing.png"
  touch "$WORK/shot2.done"
  wait "$QGIS_PID" || true
'
cat "$WORK/described.json"; echo
echo "docs/qgis_dock.png docs/qgis_processing.png (work files in $WORK)"
