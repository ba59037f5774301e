"""Fault injection for `mgimm-geo describe`: break a real run, then check the output and that `--resume`
completes it with nothing lost or doubled.

    python scripts/fault_injection.py [--kills 15] [--regions 40] [--model DIR] [--seed 0] [--workdir DIR]

Not a test: prints a JSON report (cases tried / passed / rows lost, per kind), the figures of
docs/reliability.md. Every case runs the real CLI in a subprocess on a synthetic UTM scene and AOIs
(the inputs of `mgimm-geo demo`), batches of 4 so commits are frequent:

- kill9 / sigterm: the signal at a random moment of a run (model load, reading, mid-batch, mid-commit;
  the moment is drawn uniformly over a baseline run's duration);
- disk_full: the run may write only a random number of bytes, from a quarter of a finished output's
  size to all of it (RLIMIT_FSIZE: what SQLite sees on a full disk);
- read_only: the output folder is read-only from the start (chmod 555; for root a read-only tmpfs).
  (Turning it read-only mid-run cannot be injected: Linux refuses to remount a filesystem read-only
  while a file on it is open for writing, and chmod does not stop open files or root.)
- scene_removed: the scene is renamed away mid-run (and put back for the resume);
- two_writers: a second run (--resume) on the same output while the first writes;
- guided_objects_kill9: a guided run (`--guide`, the scene's true objects) killed with SIGKILL at the
  moment its K-th batch starts writing its guide objects, after that batch's regions (K drawn over the
  batches that have objects). Versions that committed regions and objects as two transactions left
  those regions done without their objects here; now both are one transaction;
- guided_kill9: a guided run killed at a random moment.

After each case: the output (when it exists) must open as a GeoPackage holding whole, unique rows;
then `--resume` (with the fault gone) must exit 0 and leave exactly one row per AOI, none with an error,
and (guided cases) every row's guide objects in the objects layer, as many as its `guide_objects`.

    python scripts/fault_injection.py --only guided [--guided-kills 8]   # the guided cases alone
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli_cmd(scene, aoi, out, model, *extra) -> list[str]:
    cmd = [sys.executable, "-m", "batch.cli", "describe", str(scene), "--aoi", str(aoi), "-o", str(out),
           "--batch-size", "4", "--max-new-tokens", "24", "-q", *extra]
    return cmd + (["--model", model] if model else [])


#: Runs the CLI (argv after K) with a SIGKILL the moment the K-th batch starts inserting guide objects
#: (K = 0: never; the number of such batches is printed at exit). A real kill at a chosen point.
KILL_AT_OBJECTS = """
import atexit, os, signal, sys
from mgimm_core.output import gpkg
insert, at, seen = gpkg.insert_features, int(sys.argv[1]), [0]
def insert_or_die(conn, table, *args, **kwargs):
    if table == "objects":
        seen[0] += 1
        if seen[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
    return insert(conn, table, *args, **kwargs)
gpkg.insert_features = insert_or_die
atexit.register(lambda: print(f"objects batches: {seen[0]}", file=sys.stderr))
sys.argv = ["mgimm-geo", *sys.argv[2:]]
from batch.cli import main
main()
"""


def killed_at_objects(cmd: list[str], at: int) -> list[str]:
    """`cmd` (a cli_cmd) run through KILL_AT_OBJECTS."""
    return [sys.executable, "-c", KILL_AT_OBJECTS, str(at), *cmd[3:]]


def objects_lost(out: Path) -> int:
    """Guide objects that rows of a guided output count (`guide_objects`) but the objects layer lacks."""
    import pyogrio

    _, _, _, (ids, counts) = pyogrio.raw.read(str(out), layer="regions", read_geometry=False,
                                               columns=["region_id", "guide_objects"])
    held: dict[str, int] = {}
    if "objects" in [name for name, _ in pyogrio.list_layers(str(out))]:
        _, _, _, (parents,) = pyogrio.raw.read(str(out), layer="objects", read_geometry=False,
                                               columns=["parent_id"])
        for parent in parents:
            held[str(parent)] = held.get(str(parent), 0) + 1
    return sum(max(0, int(n) - held.get(str(rid), 0)) for rid, n in zip(ids, counts))


def rows(out: Path) -> list[str] | None:
    """Region ids of a readable output; None when it cannot be read as a GeoPackage."""
    import pyogrio

    if not out.exists():
        return []
    try:
        layers = [name for name, _ in pyogrio.list_layers(str(out))]
        if "regions" not in layers:
            return []
        _, _, _, fields = pyogrio.raw.read(str(out), layer="regions", read_geometry=False, columns=["region_id"])
        return [str(v) for v in fields[0]]
    except Exception:      # noqa: BLE001 - any failure to read is what this script reports
        return None


def check(out: Path, ids: list[str], cmd: list[str], env=None, guided: bool = False) -> dict:
    """The output after a fault, then after --resume: valid, nothing doubled, nothing lost (guided:
    no guide object lost either)."""
    after_fault = rows(out)
    result = {"valid_after_fault": after_fault is not None,
              "rows_after_fault": None if after_fault is None else len(after_fault),
              "doubled_after_fault": None if after_fault is None else len(after_fault) - len(set(after_fault))}
    if guided and after_fault:
        result["objects_missing_after_fault"] = objects_lost(out)
    resume = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=900)
    final = rows(out) or []
    import pyogrio

    errors = 0
    if final:
        _, _, _, fields = pyogrio.raw.read(str(out), layer="regions", read_geometry=False, columns=["error"])
        errors = sum(e is not None for e in fields[0])
    lost = len(set(ids) - set(final))
    result.update(resume_exit=resume.returncode, rows_final=len(final), doubled=len(final) - len(set(final)),
                  lost=lost, error_rows=errors)
    result["passed"] = (result["valid_after_fault"] and resume.returncode == 0 and lost == 0
                        and result["doubled"] == 0 and result["doubled_after_fault"] == 0 and errors == 0)
    if guided:
        result["objects_lost"] = objects_lost(out) if final else None
        result["passed"] = result["passed"] and result["objects_lost"] == 0
    if resume.returncode != 0:
        result["resume_stderr"] = resume.stderr[-500:]
    return result


def add_squares(scene: Path, aoi: Path, total: int, rng: random.Random) -> None:
    """Random square AOIs (8 to 40 pixels) over the scene, until the AOI file holds `total` features."""
    import pyproj
    import rasterio

    doc = json.loads(aoi.read_text())
    with rasterio.open(scene) as ds:
        t, width, height, crs = ds.transform, ds.width, ds.height, ds.crs
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for i in range(max(0, total - len(doc["features"]))):
        side = rng.uniform(8, 40)
        c0, r0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
        ring = [to_lonlat.transform(*(t * (c, r))) for c, r in
                ((c0, r0), (c0 + side, r0), (c0 + side, r0 + side), (c0, r0 + side), (c0, r0))]
        doc["features"].append({"type": "Feature", "properties": {"id": f"square-{i}", "kind": "square"},
                                "geometry": {"type": "Polygon", "coordinates": [ring]}})
    aoi.write_text(json.dumps(doc))


def run_then(cmd, after_s: float, action, **popen) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)
    try:
        proc.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        action(proc)
    _, err = proc.communicate(timeout=900)
    return proc.returncode, err


def other_faults(args, rng: random.Random, work: Path, scene: Path, aoi: Path, ids: list[str], report: dict,
                 case) -> None:
    """The unguided cases: signals at random moments, disk full, read-only folder, scene removed,
    two writers."""
    baseline_out = work / "baseline.gpkg"
    started = time.monotonic()
    done = subprocess.run(cli_cmd(scene, aoi, baseline_out, args.model), capture_output=True, text=True)
    duration = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    report["baseline_run_s"] = round(duration, 1)

    # ---------------------------------------------------------------- signals at random moments
    for i in range(args.kills + args.kills // 3):
        signum = signal.SIGKILL if i < args.kills else signal.SIGTERM
        out = work / f"kill_{i}.gpkg"
        at = rng.uniform(0.2, duration * 0.95)
        cmd = cli_cmd(scene, aoi, out, args.model)
        code, _ = run_then(cmd, at, lambda p, s=signum: p.send_signal(s))
        result = check(out, ids, cmd)
        phase = "before the first commit (model load, first batch)" if not result["rows_after_fault"] else "mid-run"
        case("kill9" if signum == signal.SIGKILL else "sigterm", {"at_s": round(at, 2), "exit": code,
                                                                    "phase": phase}, result)

    # ---------------------------------------------------------------- disk full
    full_size = baseline_out.stat().st_size
    for i in range(6):
        out = work / f"full_{i}.gpkg"
        limit = rng.randint(full_size // 4, full_size)

        def limited(limit=limit):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        cmd = cli_cmd(scene, aoi, out, args.model)
        done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limited)
        clean = "Traceback" not in done.stderr and (done.returncode == 0 or "Error:" in done.stderr)
        result = check(out, ids, cmd)
        result["passed"] = result["passed"] and clean
        case("disk_full", {"limit_bytes": limit, "exit": done.returncode, "clean_message": clean}, result)

    # ---------------------------------------------------------------- read-only folder
    root = os.geteuid() == 0
    folder = work / "ro"
    folder.mkdir()
    mounted = root and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                                      capture_output=True).returncode == 0
    if not root or mounted:
        out = folder / "out.gpkg"
        cmd = cli_cmd(scene, aoi, out, args.model)
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            folder.chmod(0o555)
        done = subprocess.run(cmd, capture_output=True, text=True)
        clean = done.returncode == 1 and "Traceback" not in done.stderr and "Error: Output" in done.stderr
        if mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        else:
            folder.chmod(0o755)
        result = check(out, ids, cmd)
        result["passed"] = result["passed"] and clean
        case("read_only", {"when": "from the start", "exit": done.returncode, "clean_message": clean}, result)
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)

    # ---------------------------------------------------------------- scene removed mid-run
    out = work / "moved.gpkg"
    moved = scene.with_name("moved_away.tif")
    cmd = cli_cmd(scene, aoi, out, args.model)
    code, err = run_then(cmd, duration * 0.5, lambda p: scene.rename(moved))
    if moved.exists():
        moved.rename(scene)
    case("scene_removed", {"exit": code, "clean_message": "Traceback" not in err}, check(out, ids, cmd))

    # ---------------------------------------------------------------- two writers
    out = work / "two.gpkg"
    cmd = cli_cmd(scene, aoi, out, args.model)
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + duration
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    second = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    first_err = first.communicate()[1]
    busy = second.returncode == 1 and "being written by another" in second.stderr
    result = check(out, ids, cmd)
    result["passed"] = result["passed"] and busy and first.returncode == 0 and "Traceback" not in second.stderr
    case("two_writers", {"first_exit": first.returncode, "second_exit": second.returncode,
                         "second_refused_busy": busy, "first_stderr": first_err[-200:]}, result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=15, help="kill -9 trials (SIGTERM: a third of that)")
    parser.add_argument("--regions", type=int, default=40)
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--guided-kills", type=int, default=8,
                        help="guided runs killed as they write a batch's guide objects (and half that at random)")
    parser.add_argument("--only", choices=("all", "guided"), default="all", help="guided: the guided cases alone")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    from training.synthetic.demo_inputs import write_demo_inputs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mgimm-faults-"))
    inputs = write_demo_inputs(work / "in", seed=11, size=512)
    scene, aoi = Path(inputs.scene), Path(inputs.aoi)
    add_squares(scene, aoi, args.regions, rng)
    ids = [str(f["properties"]["id"]) for f in json.loads(aoi.read_text())["features"]]

    report: dict = {"regions": len(ids), "cases": []}

    def case(kind: str, detail: dict, result: dict):
        report["cases"].append({"kind": kind, **detail, **result})
        print(json.dumps(report["cases"][-1]), file=sys.stderr)

    if args.only == "all":
        other_faults(args, rng, work, scene, aoi, ids, report, case)

    # ---------------------------------------------------------------- guided: kills as objects are written
    guided_cmd = cli_cmd(scene, aoi, work / "guided_baseline.gpkg", args.model, "--guide", str(inputs.truth))
    started = time.monotonic()
    done = subprocess.run(killed_at_objects(guided_cmd, 0), capture_output=True, text=True)
    guided_duration = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    object_batches = int(done.stderr.rsplit("objects batches: ", 1)[1].split()[0])
    report.update(guided_run_s=round(guided_duration, 1), guided_object_batches=object_batches)
    for i in range(args.guided_kills + args.guided_kills // 2):
        out = work / f"guided_{i}.gpkg"
        cmd = cli_cmd(scene, aoi, out, args.model, "--guide", str(inputs.truth))
        if i < args.guided_kills:
            at = 1 + i % object_batches if i < object_batches else rng.randint(1, object_batches)
            done = subprocess.run(killed_at_objects(cmd, at), capture_output=True, text=True)
            detail = {"objects_batch": at, "exit": done.returncode}
            kind = "guided_objects_kill9"
        else:
            at_s = rng.uniform(0.2, guided_duration * 0.95)
            code, _ = run_then(cmd, at_s, lambda p: p.send_signal(signal.SIGKILL))
            detail, kind = {"at_s": round(at_s, 2), "exit": code}, "guided_kill9"
        case(kind, detail, check(out, ids, cmd, guided=True))

    kinds: dict = {}
    for c in report["cases"]:
        k = kinds.setdefault(c["kind"], {"tried": 0, "passed": 0, "rows_lost": 0, "rows_doubled": 0})
        k["tried"] += 1
        k["passed"] += bool(c["passed"])
        k["rows_lost"] += c["lost"]
        k["rows_doubled"] += c["doubled"]
        if "objects_lost" in c:
            k["objects_lost"] = k.get("objects_lost", 0) + (c["objects_lost"] or 0)
            k["objects_missing_after_fault"] = (k.get("objects_missing_after_fault", 0)
                                                + (c.get("objects_missing_after_fault") or 0))
    report["summary"] = kinds
    report["total"] = {"tried": len(report["cases"]), "passed": sum(bool(c["passed"]) for c in report["cases"]),
                       "rows_lost": sum(c["lost"] for c in report["cases"]),
                       "objects_lost": sum(c.get("objects_lost") or 0 for c in report["cases"])}
    print(json.dumps(report, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
