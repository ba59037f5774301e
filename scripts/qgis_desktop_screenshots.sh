#!/usr/bin/env bash
# The MGIMM plugin's pictures from the real QGIS desktop -> docs/qgis_dock.png, docs/qgis_processing.png,
# docs/qgis_guided.png, docs/qgis_bands.png, docs/qgis_cancelled_tiles.png, docs/qgis_diagnostics.png
#
#   scripts/qgis_desktop_screenshots.sh [PYTHON] [SCENARIO...]
#
# PYTHON: the interpreter where mgimm-geo is installed (default: python3 on PATH). SCENARIO: plain
# (docs/qgis_dock.png and docs/qgis_processing.png), guided (docs/qgis_guided.png) and/or bands
# (docs/qgis_bands.png, docs/qgis_cancelled_tiles.png, docs/qgis_diagnostics.png) and/or real (docs/qgis_real.png:
# the real Landsat 7 sample, ../shared/data/L7_ETMs.tif or $MGIMM_REAL_SCENE); default all four, each in a QGIS session of its own. Needs QGIS, Xvfb, xdotool and ImageMagick
# (scripts/setup_qgis_env.sh installs them). What it does, as a user would: builds the plugin ZIP
# (qgis_plugin/build_zip.py) and installs it into a fresh QGIS profile the way "Install from ZIP" does
# (unpacked into the profile's python/plugins, enabled in QGIS3.ini, with the worker set to this checkout's
# mgimm-geo and the embedded demo model); writes the demo scene, its AOIs and its truth footprints;
# starts QGIS under Xvfb with them; then
#  - plain: drags a rectangle with the "Describe a drawn rectangle" tool (xdotool) over the AOI object
#    nearest the scene's centre, takes the window after the description arrives, opens the Processing
#    dialog of "Describe regions" and takes that too;
#  - guided: turns "Describe with guide layer" on with the truth footprints as the panel's Guide layer,
#    drags a rectangle around the four footprints nearest the scene's centre and takes the window
#    once the description and the "MGIMM guide objects" layer are there;
#  - bands: makes a 6-band Landsat-5-like stack of the scene (no colour interpretation), chooses it in
#    the panel (whose Bands row shows the default true colour), drags a rectangle as in plain and takes
#    the window; then runs "Describe scene tiles" on the stack from its dialog, cancels it once the
#    progress bar shows a percentage and takes the window with the tiles it kept loaded; then opens
#    "MGIMM diagnostics…" and takes that dialog.
# scripts/qgis_desktop_driver.py is QGIS's side.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-$(command -v python3)}"
shift || true
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(plain guided bands real)
# The real scene: the Landsat 7 sample beside the checkout (../shared/data, see its README).
REAL_SCENE="${MGIMM_REAL_SCENE:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/L7_ETMs.tif}"
for name in "${SCENARIOS[@]}"; do
  if [ "$name" = real ] && [ ! -f "$REAL_SCENE" ]; then
    echo "scenario real needs the Landsat 7 sample: $REAL_SCENE is missing (set MGIMM_REAL_SCENE)" >&2; exit 2
  fi
done
for name in "${SCENARIOS[@]}"; do
  case "$name" in plain|guided|bands|real) ;; *) echo "unknown scenario $name (plain, guided, bands, real)" >&2; exit 2;; esac
done
"$PY" -c "import torch, rasterio" 2>/dev/null || { echo "$PY cannot import torch and rasterio: give the Python where \
mgimm-geo's requirements are installed" >&2; exit 2; }
# The worker runs this checkout's code (`python -m batch.cli` from $REPO), so the pictures show this tree.
MGIMM="$PY -m batch.cli"
cd "$REPO"
WORK="$(mktemp -d /tmp/mgimm_shots.XXXXXX)"
PROFILES="$WORK/profiles"
PLUGINS="$PROFILES/default/python/plugins"
mkdir -p "$PLUGINS" "$PROFILES/default/QGIS"

python3 "$REPO/qgis_plugin/build_zip.py" -o "$WORK/mgimm_geo_qgis.zip"
python3 -m zipfile -e "$WORK/mgimm_geo_qgis.zip" "$PLUGINS"          # what Install from ZIP does
env -u PYTHONPATH "$PY" -c "import sys; from training.synthetic.demo_inputs import write_demo_inputs; \
write_demo_inputs(sys.argv[1], seed=2024)" "$WORK/demo"

wait_for() {  # a file the driver writes into $SHOTS; failed.json (the driver's error) ends the run
  for _ in $(seq 1 600); do
    [ -e "$SHOTS/$1" ] && return 0
    [ -e "$SHOTS/failed.json" ] && { cat "$SHOTS/failed.json" >&2; exit 1; }
    sleep 0.5
  done
  echo "timed out waiting for $1 (QGIS log: $SHOTS/qgis.log)" >&2; exit 1
}
drag() {  # the user's drag of drag.json's rectangle on the canvas
  read -r X1 Y1 X2 Y2 < <(python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print(*d['from'], *d['to'])" \
                                   "$SHOTS/drag.json")
  xdotool mousemove "$X1" "$Y1" mousedown 1
  for i in 1 2 3 4 5; do xdotool mousemove $(( X1 + (X2 - X1) * i / 5 )) $(( Y1 + (Y2 - Y1) * i / 5 )); sleep 0.1; done
  xdotool mouseup 1
}
scenario() {  # $1: plain or guided, in a QGIS session of its own under Xvfb
  SHOTS="$WORK/$1"
  mkdir -p "$SHOTS"
  cat > "$PROFILES/default/QGIS/QGIS3.ini" <<INI
[PythonPlugins]
mgimm_geo=true

[mgimm_geo]
mode=worker
worker_command=$MGIMM worker
layer_path=$WORK/$1/descriptions.gpkg
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
  RASTER="$WORK/demo/scene.tif"
  if [ "$1" = guided ]; then VECTOR="$WORK/demo/truth.gpkg"; else VECTOR="$WORK/demo/aoi.geojson"; fi
  if [ "$1" = real ]; then      # the real Landsat 7 sample and one AOI over its city (lon/lat, from its pixels)
    RASTER="$REAL_SCENE"
    VECTOR="$WORK/real_aoi.geojson"
    env -u PYTHONPATH "$PY" - "$RASTER" "$VECTOR" <<'PYAOI'
import json, sys
import rasterio
from rasterio.warp import transform_bounds
with rasterio.open(sys.argv[1]) as scene:          # columns 60-160, rows 200-300: the city south-west
    (x0, y1), (x1, y0) = scene.transform * (60, 200), scene.transform * (160, 300)
    w, s, e, n = transform_bounds(scene.crs, "EPSG:4326", x0, y0, x1, y1)
ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
json.dump({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"id": "city"},
           "geometry": {"type": "Polygon", "coordinates": [ring]}}]}, open(sys.argv[2], "w"))
PYAOI
  fi
  export MGIMM_SHOT_DIR="$SHOTS" MGIMM_SHOT_MODE="$1" SHOTS REPO
  # (xvfb-run is a sh script: exported bash functions would not get through it)
  xvfb-run -a -s "-screen 0 1400x900x24" bash -euo pipefail -c "$(declare -f wait_for drag)"'
    qgis --profiles-path "$1" --nologo --noversioncheck --code "$REPO/scripts/qgis_desktop_driver.py" \
         "$2" "$3" > "$SHOTS/qgis.log" 2>&1 &
    QGIS_PID=$!
    wait_for drag.json
    drag
    wait_for described.json
    if [ "$MGIMM_SHOT_MODE" = guided ]; then
      import -window root "$SHOTS/guided.png"
      convert "$SHOTS/guided.png" -dither None -colors 256 "PNG8:$REPO/docs/qgis_guided.png"   # ~150 KB, not 500
      touch "$SHOTS/shot1.done"
    elif [ "$MGIMM_SHOT_MODE" = real ]; then
      import -window root "$SHOTS/real.png"
      convert "$SHOTS/real.png" -dither None -colors 256 "PNG8:$REPO/docs/qgis_real.png"
      touch "$SHOTS/shot1.done"
    elif [ "$MGIMM_SHOT_MODE" = bands ]; then
      import -window root "$SHOTS/bands.png"
      convert "$SHOTS/bands.png" -dither None -colors 256 "PNG8:$REPO/docs/qgis_bands.png"
      touch "$SHOTS/shot1.done"
      wait_for processing.json
      import -window root "$SHOTS/cancelled.png"
      convert "$SHOTS/cancelled.png" -dither None -colors 256 "PNG8:$REPO/docs/qgis_cancelled_tiles.png"
      cat "$SHOTS/processing.json"; echo
      touch "$SHOTS/shot2.done"
      wait_for diagnostics.json
      CROP=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[\"crop\"])" "$SHOTS/diagnostics.json")
      import -window root -crop "$CROP" +repage "$REPO/docs/qgis_diagnostics.png"
      touch "$SHOTS/shot3.done"
    else
      import -window root "$REPO/docs/qgis_dock.png"
      touch "$SHOTS/shot1.done"
      wait_for processing.json
      CROP=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[\"crop\"])" "$SHOTS/processing.json")
      import -window root -crop "$CROP" +repage "$REPO/docs/qgis_processing.png"
      touch "$SHOTS/shot2.done"
    fi
    wait "$QGIS_PID" || true
  ' _ "$WORK" "$RASTER" "$VECTOR"
  cat "$SHOTS/described.json"; echo
}
for name in "${SCENARIOS[@]}"; do scenario "$name"; done
echo "pictures in docs/ (work files in $WORK)"
