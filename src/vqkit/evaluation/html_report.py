"""The report page, index.html: self-contained (inline CSS and script, no network, every link relative
to a file in the report folder). See `render_report`."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from urllib.parse import quote

from ..io.files import atomic_write

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.15em;margin:28px 0 10px;border-bottom:2px solid #dde2ea;padding-bottom:4px}
h3{font-size:1em;margin:0 0 8px;word-break:break-all}
.sub{color:#5b6475;margin:0 0 16px}
.cols{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
.card{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:14px 16px;box-shadow:0 1px 2px #0000000d}
.cols>.card{flex:1 1 420px}.card>h2:first-child{margin-top:0}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:3px 10px;border-bottom:1px solid #edf0f4;vertical-align:top}
th{font-weight:600;color:#3a4254;white-space:nowrap}
td.num{font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
td code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
pre{white-space:pre-wrap;background:#f3f5f8;padding:8px;border-radius:6px;margin:6px 0 0}
.note{color:#5b6475;font-size:.88em;margin:8px 0 0}
figure{margin:0}figcaption{font-size:.85em;color:#5b6475;margin:0 0 4px}
img{max-width:100%;height:auto;display:block;border-radius:4px}
.example{margin:0 0 16px}.images{display:flex;flex-direction:column;gap:10px}
.players{display:flex;flex-wrap:wrap;gap:14px;margin-top:10px}.players audio{width:280px}
"""

# On load: how many images decoded and how many audio players have metadata (a headless browser
# test reads these from the DOM). No network, nothing but the page itself.
SCRIPT = """
(function () {
  function audioState() {
    var a = document.querySelectorAll("audio"), n = 0;
    for (var i = 0; i < a.length; i++) { if (a[i].readyState >= 1 && a[i].duration > 0) n++; }
    document.body.dataset.audio = String(a.length);
    document.body.dataset.audioReady = n + "/" + a.length;
  }
  var players = document.querySelectorAll("audio");
  for (var i = 0; i < players.length; i++) { players[i].addEventListener("loadedmetadata", audioState); }
  window.addEventListener("load", function () {
    var im = document.images, ok = 0;
    for (var i = 0; i < im.length; i++) { if (im[i].complete && im[i].naturalWidth > 0) ok++; }
    document.body.dataset.loaded = ok + "/" + im.length;
    audioState();
  });
})();
"""

PROVENANCE = [("checkpoint", "checkpoint"), ("tokenizer_id", "tokenizer id"), ("vocoder", "vocoder"),
              ("crop", "crop"), ("created", "created")]
DATA = [("root", "data root"), ("files", "files"), ("skipped", "skipped files"),
        ("file_list_sha256", "file-list hash (sha256)")]
HANDLED = {"metrics", "data", "settings", "units", "title"} | {k for k, _ in PROVENANCE}


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _src(path: str) -> str:
    """A relative link to a file in the report folder, safe in an attribute."""
    return _e(quote(str(path).replace("\\", "/")))


def format_value(v) -> str:
    """Numbers to 4 significant digits (whole numbers with thousands separators), lists as text."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:,.1f}" if abs(v) >= 1e4 else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if v is None:
        return "—"
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def _cell(v) -> str:
    if isinstance(v, (dict, list)) and not v:
        return "<td>none</td>"
    if isinstance(v, dict) and all(isinstance(x, (str, int, float, bool)) or x is None for x in v.values()):
        return f"<td>{'<br>'.join(f'{_e(k)}: {_e(format_value(x))}' for k, x in v.items())}</td>"
    if isinstance(v, dict):
        return f"<td><pre>{_e(json.dumps(v, indent=1, default=str))}</pre></td>"
    cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
    return f"<td{cls}>{_e(format_value(v))}</td>"


def _metrics_table(record: dict) -> str:
    metrics = record.get("metrics") or {}
    rows = "".join(f"<tr><th>{_e(k)}</th>{_cell(v)}</tr>" for k, v in metrics.items())
    if not rows:
        rows = '<tr><td colspan="2">no metrics recorded</td></tr>'
    units = f'<p class="note">{_e(record["units"])}</p>' if record.get("units") else ""
    return f'<section class="card"><h2>Metrics</h2><table class="metrics">{rows}</table>{units}</section>'


def _provenance(record: dict, out_dir: Path) -> str:
    rows = [(label, record[k]) for k, label in PROVENANCE if k in record]
    data = record.get("data") or {}
    rows += [(label, data[k]) for k, label in DATA if k in data]
    rows += [(f"data {k}", v) for k, v in data.items() if k not in dict(DATA)]
    rows += [(k.replace("_", " "), v) for k, v in record.items() if k not in HANDLED]  # e.g. metric versions
    body = "".join(f"<tr><th>{_e(label)}</th>{_cell(v) if not isinstance(v, str) else f'<td><code>{_e(v)}</code></td>'}</tr>"
                   for label, v in rows)
    settings = record.get("settings")
    extra = ""
    if settings:
        extra += (f"<details><summary>settings</summary><pre>"
                  f"{_e(json.dumps(settings, indent=1, default=str))}</pre></details>")
    if (Path(out_dir) / "metrics.json").exists():
        extra += '<p class="note">All numbers and settings: <a href="metrics.json">metrics.json</a></p>'
    return f'<section class="card"><h2>Provenance</h2><table class="provenance">{body}</table>{extra}</section>'


def _figure(src: str, caption: str, alt: str) -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure>{cap}<img src="{_src(src)}" alt="{_e(alt or caption or src)}"></figure>'


def _example(ex: dict) -> str:
    title = str(ex.get("title", ""))
    images = "".join(_figure(im["src"], im.get("caption", ""), im.get("caption") or title)
                     for im in ex.get("images", []))
    players = "".join(f'<figure><figcaption>{_e(a.get("label", a["src"]))}</figcaption>'
                      f'<audio controls preload="metadata" src="{_src(a["src"])}"></audio></figure>'
                      for a in ex.get("audio", []))
    return (f'<section class="card example"><h3>{_e(title)}</h3>'
            + (f'<div class="images">{images}</div>' if images else "")
            + (f'<div class="players">{players}</div>' if players else "") + "</section>")


def render_page(record: dict, examples: list[dict], usage_png: str | None = None,
                curves_png: str | None = None, out_dir: Path = Path("."), pages: list[str] | None = None) -> str:
    settings = record.get("settings") or {}
    modality = settings.get("modality") if isinstance(settings, dict) else None
    title = record.get("title") or "vqkit report"
    sub = " · ".join(_e(x) for x in (f"tokenizer {record['tokenizer_id']}" if record.get("tokenizer_id") else "",
                                         f"{modality} tokenizer" if modality else "",
                                         record.get("created", "")) if x)
    parts = [f"<h1>{_e(title)}</h1>", f'<p class="sub">{sub}</p>' if sub else "",
             f'<div class="cols">{_metrics_table(record)}{_provenance(record, out_dir)}</div>']
    if usage_png:
        parts.append(f'<h2>Codebook usage</h2><section class="card">{_figure(usage_png, "", "codebook usage histogram")}</section>')
    if curves_png:
        parts.append(f'<h2>Training curves</h2><section class="card">{_figure(curves_png, "", "training curves")}</section>')
    if pages:
        links = "".join(f'<li><a href="{_src(p + "/index.html")}">{_e(p)}</a></li>' for p in pages)
        parts.append(f'<h2>More pages</h2><section class="card"><ul>{links}</ul></section>')
    if examples:
        parts.append(f"<h2>Examples ({len(examples)})</h2>" + "".join(_example(ex) for ex in examples))
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body><main>"
            + "\n".join(p for p in parts if p) + f"</main>\n<script>{SCRIPT}</script></body></html>\n")


def render_report(out_dir: Path, record: dict, examples: list[dict], usage_png: str | None = None,
                  curves_png: str | None = None, pages: list[str] | None = None) -> Path:
    """Write `out_dir/index.html`: title, metrics table, provenance (checkpoint, tokenizer id, data root,
    file count, file-list hash, versions, settings), the usage histogram and training curves when
    given, and one row per example. `examples` items: {"title": str, "images": [{"src", "caption"}],
    "audio": [{"src", "label"}]}; every src is a file name relative to out_dir. `pages`: sub-folders
    of out_dir with their own index.html, linked."""
    out_dir = Path(out_dir)
    return atomic_write(out_dir / "index.html", render_page(record, examples or [], usage_png, curves_png, out_dir, pages))
