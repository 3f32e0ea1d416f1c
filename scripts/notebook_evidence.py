"""Keep the evidence of a full run of notebooks 05 and 06: a small PNG of samples and a JSON of metrics and times.

    python scripts/notebook_evidence.py RUN/05_training.ipynb RUN/06_sampling_and_evaluation.ipynb \
        --out benchmarks/results

reads notebooks executed by ``scripts/run_notebook.py`` (their ``metadata.run_notebook`` holds the machine,
the date and each cell's seconds) and writes, named after the machine and the date:

* ``notebooks-<machine>-<date>.json``: for each notebook its wall time, whether it finished, the slowest
  cells; for 05 the preset, steps and training seconds it printed; for 06 every row of its
  steps-versus-quality table (sampler, network calls, seconds, Frechet distance and its floor, KID, confidence),
  its nearest-neighbour line and which model it sampled (a warning if not notebook 05's: a notebook 05 stopped
  before the end leaves an unfinished run, and notebook 06 then falls back to the shipped CPU model);
* ``notebooks-<machine>-<date>-05-samples.png``: notebook 05's final sample grid (EMA weights), as shown (stored in
  8-bit grey when that loses nothing: ``compact_png``);
* ``notebooks-<machine>-<date>-06-samplers.png``: notebook 06's rows of samples, one row per sampler setting.

Only what the notebooks printed is used; nothing is recomputed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import sys
from pathlib import Path

import nbformat

TABLE_FIELDS = ("calls", "seconds", "ms_per_image", "frechet_distance", "frechet_distance_floor", "kid", "kid_floor",
                "mean_confidence", "frac_in_distribution")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "machine"


# The cells the evidence comes from: (notebook, a line of the cell's source, found anywhere in it, and the phrases of
# its printed output that the parsers below read). tests/test_run_notebook.py checks them against the notebooks, so
# that an edit of a notebook cannot make this script quietly miss a cell (it once looked for how a cell *began*, and
# two cells had gained a comment line on top).
CELLS = {
    "05-announce": ("05", "RUN_NAME =", ("training preset", "bf16 autocast:")),
    "05-trained": ("05", "trainer = Trainer(", ("trained to step", "s in this session)")),
    "05-samples": ("05", "viz.show_images(samples_ema", ()),
    "06-table": ("06", 'print(f"{NUM_EVAL} images per setting', ("images per setting, on", "FD ranges", "every setting")),
    "06-model": ("06", "def newest_checkpoint", ("model source:",)),
    "06-nearest": ("06", "def nearest_train", ("median distance to the nearest training image:",)),
    "06-samplers": ("06", "rows = torch.cat", ()),
}
PICTURES = ("05-samples", "06-samplers")


def code_cell(nb, key: str):
    """The first code cell of ``nb`` whose source contains the line of ``CELLS[key]``, or None."""
    marker = CELLS[key][1]
    for cell in nb.cells:
        if cell.cell_type == "code" and marker in cell.source:
            return cell
    return None


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in (cell.outputs if cell else []) if o.get("output_type") == "stream")


def first_png(cell) -> bytes | None:
    for output in cell.outputs if cell else []:
        data = output.get("data", {})
        if "image/png" in data:
            return base64.b64decode(data["image/png"])
    return None


def compact_png(data: bytes) -> bytes:
    """The same picture in fewer bytes when that loses nothing. Matplotlib writes RGBA even for an opaque figure in
    greys (all the course's sample grids); stored as 8-bit grey, pixel for pixel the same, it takes about half the
    bytes. Anything else (colour, transparency, bytes that are not a readable PNG) is returned unchanged."""
    import numpy as np
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError):  # PIL's UnidentifiedImageError is an OSError
        return data
    if image.mode not in ("RGB", "RGBA"):
        return data
    pixels = np.asarray(image)
    grey = (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    opaque = image.mode == "RGB" or (pixels[..., 3] == 255).all()
    if not (grey and opaque):
        return data
    out = io.BytesIO()
    image.convert("L").save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data


def run_summary(nb, path: Path) -> dict:
    log = nb.metadata.get("run_notebook")
    if log is None:
        raise ValueError(f"{path} was not executed by scripts/run_notebook.py (no metadata.run_notebook)")
    slowest = sorted(log["cells"], key=lambda c: -c["seconds"])[:5]
    return {"notebook": log["notebook"], "machine": log["machine"], "started": log["started"],
            "finished": log["finished"], "seconds": log["seconds"], "code_cells_run": len(log["cells"]),
            "slowest_cells": slowest}


def parse_table(text: str) -> list[dict]:
    """Rows of notebook 06's table: a name, then the numbers of TABLE_FIELDS (the last, the share in distribution,
    printed as a percentage; tables printed before it was added end at the confidence)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        fields = TABLE_FIELDS if parts and parts[-1].endswith("%") else TABLE_FIELDS[:-1]
        k = len(fields)
        if len(parts) < k + 1:
            continue
        try:
            numbers = [float(p[:-1]) / 100 if p.endswith("%") else float(p) for p in parts[-k:]]
        except ValueError:
            continue
        rows.append({"setting": " ".join(parts[:-k]), **dict(zip(fields, numbers))})
    for row in rows:
        row["calls"] = int(row["calls"])
    return rows


def notebook05(nb) -> dict:
    out = {}
    announced = stream_text(code_cell(nb, "05-announce"))
    match = re.search(r"training preset '(\w+)' on (\S+) for (\d+) steps", announced)
    if match:
        out.update(preset=match[1], device=match[2], steps=int(match[3]))
    match = re.search(r"bf16 autocast: (True|False)", announced)
    if match:
        out["bf16"] = match[1] == "True"
    trained = stream_text(code_cell(nb, "05-trained"))
    match = re.search(r"trained to step (\d+) \(([\d.]+) s in this session\)", trained)
    if match:
        out.update(trained_to_step=int(match[1]), train_seconds=float(match[2]))
    return out


def notebook06(nb) -> dict:
    table_cell = code_cell(nb, "06-table")
    text = stream_text(table_cell)
    out = {"table": parse_table(text)}
    source = re.search(r"model source: (.*)", stream_text(code_cell(nb, "06-model")))
    if source:  # (1) notebook 05's checkpoint; (2) the shipped model, when 05 did not finish; (3) one trained in 06
        out.update(model_source=source[1], model_from_notebook_05=source[1].startswith("(1)"))
    match = re.search(r"(\d+) images per setting, on (\S+)", text)
    if match:
        out.update(images_per_setting=int(match[1]), device=match[2])
    verdict = [line for line in text.splitlines() if line.startswith(("every setting", "FD ranges"))]
    if verdict:
        out["verdict"] = verdict[0]
    nn = re.search(r"median distance to the nearest training image: .*", stream_text(code_cell(nb, "06-nearest")))
    if nn:
        out["nearest_neighbour"] = nn[0]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("nb05", type=Path, help="executed notebooks/05_training.ipynb")
    parser.add_argument("nb06", type=Path, help="executed notebooks/06_sampling_and_evaluation.ipynb")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the JSON and PNG files")
    args = parser.parse_args(argv)
    for name in ("nb05", "nb06"):
        if not getattr(args, name).is_file():
            parser.error(f"{name} must be an executed notebook file, got {str(getattr(args, name))!r}")
    nb05, nb06 = (nbformat.read(p, as_version=4) for p in (args.nb05, args.nb06))
    try:
        runs = [run_summary(nb05, args.nb05), run_summary(nb06, args.nb06)]
    except ValueError as error:
        parser.error(str(error))
    machine, date = runs[0]["machine"], runs[0]["started"][:10]
    stem = f"notebooks-{slug(machine.split(',')[0])}-{date.replace('-', '')}"
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "date": date, "runs": runs, "05_training": notebook05(nb05),
              "06_sampling_and_evaluation": notebook06(nb06), "images": {}}
    notebooks = {"05": nb05, "06": nb06}
    missing = [f"notebook {CELLS[key][0]} has no code cell containing {CELLS[key][1]!r}" for key in CELLS
               if code_cell(notebooks[CELLS[key][0]], key) is None]
    for key in PICTURES:
        png = first_png(code_cell(notebooks[CELLS[key][0]], key))
        if png is None:
            missing.append(f"no picture {key}: its cell did not run or drew nothing")
            continue
        path = args.out / f"{stem}-{key}.png"
        path.write_bytes(compact_png(png))
        result["images"][key] = path.name
    for line in missing:
        print(f"warning: {line}", file=sys.stderr)
    result["missing"] = missing
    if not result["06_sampling_and_evaluation"].get("model_from_notebook_05"):
        print("warning: notebook 06 did not sample the model notebook 05 trained (model source: "
              f"{result['06_sampling_and_evaluation'].get('model_source', 'not printed')}); its numbers are not "
              "evidence of that run", file=sys.stderr)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {json_path}" + "".join(f" and {args.out / n}" for n in result["images"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
