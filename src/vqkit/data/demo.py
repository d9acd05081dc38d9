"""The built-in demo speech corpus: real recorded speech when available, synthetic speech otherwise.

Primary source: the Asterisk English prompts (Debian package asterisk-core-sounds-en-g722; Allison
Smith's voice, CC-BY-SA-3.0), about 25 minutes of studio speech as 16 kHz G.722. Fallback: English
sentences synthesised with espeak-ng. Layout of `out_dir`: train/*.wav, heldout/*.wav (16-bit PCM
at the source rate), ATTRIBUTION.txt and manifest.json (written last, so it marks a complete build).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..frontends.audio_io import AudioError, load_audio, save_wav
from ..io.files import atomic_write
from ..io.inputs import read_manifest

ASTERISK_PACKAGE = "asterisk-core-sounds-en-g722"
ASTERISK_DIRS = (Path("/usr/share/asterisk/sounds/en_US_f_Allison"), Path("/usr/share/asterisk/sounds/en"))
ASTERISK_RATE = 16000
ESPEAK_BINARY = "espeak-ng"
# (voice+variant, words per minute): several accents, both sexes, a range of speeds.
ESPEAK_VOICES = (("en-us", 160), ("en-gb", 150), ("en-us+f3", 170), ("en-gb+m3", 140),
                 ("en-us+f2", 185), ("en-gb-scotland+m1", 155), ("en-gb-x-rp+f4", 175), ("en-029+m7", 190))
HELDOUT_COUNT = 16
HELDOUT_SECONDS = (2.0, 8.0)
MIN_SECONDS = 0.5
SPEECH_PEAK = 0.01        # quieter clips hold no speech (Asterisk's silence/ prompts peak at ~4e-4)
MANIFEST_VERSION = 1
WORKERS = 2

# Written for vqkit. Mostly 8-16 words each, so most clips last 2-8 s at 140-190 wpm.
SENTENCES = (
    'The quick brown fox jumps over the lazy dog near the river bank.',
    "A cup of warm tea on a rainy afternoon is one of life's small pleasures.",
    'The train to the coast leaves at half past seven every weekday morning.',
    'She planted tomatoes, beans and sunflowers along the south wall of the garden.',
    'Please remember to switch off the lights before you leave the office.',
    'The old lighthouse keeper counted ships passing in the fog.',
    'Bright stars filled the winter sky above the quiet mountain village.',
    'He measured the table twice before cutting the first piece of oak.',
    'Our neighbours painted their front door a cheerful shade of yellow.',
    'The library will be closed on Monday for the public holiday.',
    'Seven children raced across the field to catch the runaway kite.',
    'A gentle breeze carried the smell of fresh bread down the street.',
    'The committee agreed to meet again after reviewing the new proposal.',
    'Thunder rolled across the valley long before the first drops of rain.',
    'My grandfather kept every letter he ever received in a wooden box.',
    'The museum displays a collection of clocks from three different centuries.',
    'Turn left at the bakery, then walk straight on until you reach the bridge.',
    'The orchestra tuned their instruments while the audience found their seats.',
    "A small brown dog waited patiently outside the butcher's shop.",
    'The recipe calls for two eggs, a pinch of salt and a spoonful of honey.',
    'Heavy snow blocked the mountain pass for nearly a week.',
    'The students built a simple radio from copper wire and a crystal.',
    'Every spring the swallows return to nest under the barn roof.',
    'The captain ordered the crew to lower the sails before the storm.',
    'Fresh strawberries are sold at the market every Saturday in June.',
    'The scientist recorded the temperature of the lake each morning at dawn.',
    'A long queue formed outside the theatre hours before the doors opened.',
    'The bicycle needs new brakes and a little oil on the chain.',
    'Silver fish darted between the rocks in the clear shallow stream.',
    'The town council voted to plant a hundred new trees along the avenue.',
    'She read the final chapter slowly, not wanting the story to end.',
    'The farmer checked the fences after the wind had blown all night.',
    'Warm light spilled from the windows of the little cottage.',
    'The map showed a narrow path winding through the forest to the lake.',
    'Two owls called to each other across the dark and silent wood.',
    'The baker rises at four to prepare the morning loaves.',
    'Our flight was delayed by an hour because of heavy fog at the airport.',
    'The painter mixed blue and yellow to find the perfect shade of green.',
    'A lost umbrella has been waiting at the front desk since Tuesday.',
    'The river flooded the lower meadow after a week of steady rain.',
    'He whistled an old tune while repairing the garden gate.',
    'The engineers tested the bridge with trucks loaded with gravel.',
    'Children collected shells and smooth pebbles along the sandy beach.',
    'The clock in the hall struck midnight as the guests were leaving.',
    'Please write your name clearly at the top of each page.',
    'The kettle began to sing just as the visitors knocked on the door.',
    'Autumn leaves drifted slowly onto the surface of the pond.',
    'The chess players sat in silence for nearly twenty minutes.',
    'A fox crept along the hedge looking for something to eat.',
    'The new bakery on the corner sells the best rye bread in town.',
    'Bees moved from flower to flower in the warm afternoon sun.',
    'The teacher wrote three questions on the board and waited for answers.',
    'A narrow staircase led up to a small room full of old books.',
    'The fishermen mended their nets on the harbour wall.',
    'Our guide pointed out the ruins of a castle on the distant hill.',
    'The soup needs another ten minutes on a low heat.',
    'Far away, a church bell rang out across the frozen fields.',
    'The mechanic found a loose wire behind the dashboard.',
    'Rain tapped softly against the window all through the night.',
    'The shepherd counted his sheep as they passed through the gate.',
    'A single candle lit the table where the family sat down to eat.',
    'The hikers reached the summit just in time to watch the sunrise.',
    'Quiet please, the concert is about to begin.',
    'Numbers like forty two, one hundred and nine, and three thousand are easy to say.',
)

ASTERISK_ATTRIBUTION = """\
Demo speech corpus: Asterisk core sound prompts, English (US), voice of Allison Smith.

Source: Debian package {package} (upstream asterisk-core-sounds,
http://downloads.asterisk.org/pub/telephony/asterisk/), read from {origin}.

Attribution, quoted from /usr/share/doc/{package}/copyright:

  Files: *
  Copyright: 2003-2010, Allison Smith
  Comment: The CREDITS file:
   Recorded by:
   Allison Smith (http://www.theivrvoice.com)
   .
   Financial Contributions by:
   Digium, Inc. (http://www.digium.com)
   License: CC-BY-SA-3.0

Licence: Creative Commons Attribution-ShareAlike 3.0 Unported (CC-BY-SA-3.0),
https://creativecommons.org/licenses/by-sa/3.0/

Changes made (CC-BY-SA-3.0 section 4b asks for them to be marked): the G.722 prompts were decoded and
stored as 16-bit PCM WAV at 16 kHz; prompts shorter than {min_seconds} s and the silence/ prompts were
left out; files were renamed ('/' -> '__') and split into train/ and heldout/. These files are a
derivative of the Work and are distributed under the same licence.
"""

ESPEAK_ATTRIBUTION = """\
Demo speech corpus: English sentences synthesised locally with espeak-ng ({version}).

espeak-ng (https://github.com/espeak-ng/espeak-ng) is a GPL-3.0-or-later program; its licence does not
extend to the audio it produces. The sentences were written for vqkit and, like the synthesised
audio, are part of vqkit (Apache-2.0). Voices and speeds used: {voices}.
"""


def asterisk_dir() -> Path | None:
    """The installed Asterisk English prompt folder, if any (and PyAV to decode G.722)."""
    if importlib.util.find_spec("av") is None:
        return None
    for d in ASTERISK_DIRS:
        if d.is_dir() and any(d.rglob("*.g722")):
            return d
    return None


def espeak_binary() -> str | None:
    return shutil.which(ESPEAK_BINARY)


def _install_hint() -> str:
    return (f"install real recorded speech with `apt-get install {ASTERISK_PACKAGE}` (and the `av` Python "
            f"package), or a speech synthesiser with `apt-get install espeak-ng`; or train on your own "
            f"folder of audio with `vqkit train --data DIR`")


def _pick_source(source: str) -> str:
    if source not in ("auto", "asterisk", "espeak"):
        raise ValueError(f"source must be 'auto', 'asterisk' or 'espeak', got {source!r}")
    have_asterisk, have_espeak = asterisk_dir() is not None, espeak_binary() is not None
    if source == "asterisk" and not have_asterisk:
        raise RuntimeError(f"demo source 'asterisk' needs the {ASTERISK_PACKAGE} prompts in "
                           f"{' or '.join(map(str, ASTERISK_DIRS))} and PyAV: {_install_hint()}")
    if source == "espeak" and not have_espeak:
        raise RuntimeError(f"demo source 'espeak' needs the {ESPEAK_BINARY} program on PATH: {_install_hint()}")
    if source == "auto":
        if not (have_asterisk or have_espeak):
            raise RuntimeError(f"no demo speech source is available: {_install_hint()}")
        source = "asterisk" if have_asterisk else "espeak"
    return source


# ---- sources: each returns ([(name, audio)] sorted by name, sample rate, manifest info, attribution) --

def _asterisk_clips(log: Callable[[str], None]):
    root = asterisk_dir()
    files = sorted(root.rglob("*.g722"), key=lambda p: p.relative_to(root).as_posix())

    def decode(p: Path):
        try:
            return load_audio(p, ASTERISK_RATE)
        except AudioError as e:
            log(f"demo: skipping {e}")
            return None

    with ThreadPoolExecutor(WORKERS) as pool:
        audios = list(pool.map(decode, files))
    names = [p.relative_to(root).with_suffix(".wav").as_posix().replace("/", "__") for p in files]
    clips = [(n, a) for n, a in zip(names, audios) if a is not None]
    info = {"source": ASTERISK_PACKAGE, "licence": "CC-BY-SA-3.0", "origin": str(root),
            "unreadable": len(files) - len(clips)}
    return clips, ASTERISK_RATE, info, ASTERISK_ATTRIBUTION.format(
        package=ASTERISK_PACKAGE, origin=root, min_seconds=MIN_SECONDS)


def _espeak_clips(log: Callable[[str], None]):
    import soundfile as sf

    binary = espeak_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    version = version.split("  Data at")[0].strip()  # drop the data path: it varies by machine
    # Each sentence twice, in two different voice/speed settings (offset by half the voice list).
    jobs = []
    for i, text in enumerate(SENTENCES):
        for k in (0, len(ESPEAK_VOICES) // 2):
            voice, wpm = ESPEAK_VOICES[(i + k) % len(ESPEAK_VOICES)]
            # Voice first: evenly spaced held-out picks from the sorted names then cover every voice.
            jobs.append((f"{voice.replace('+', '_')}__{wpm}wpm__s{i:03d}.wav", voice, wpm, text))
    jobs.sort()
    with tempfile.TemporaryDirectory(prefix="vqkit-espeak-") as tmp:
        def synth(job):
            name, voice, wpm, text = job
            wav = Path(tmp) / name
            try:
                subprocess.run([binary, "-v", voice, "-s", str(wpm), "-w", str(wav), text],
                               check=True, capture_output=True, timeout=60)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                raise RuntimeError(f"{binary} failed on {name}: {(e.stderr or b'').decode(errors='replace')}")
            audio, sr = sf.read(str(wav), dtype="float32")
            return name, audio, int(sr)

        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(synth, jobs))
    rate = results[0][2]
    if any(r[2] != rate for r in results):
        raise RuntimeError(f"{binary} wrote WAVs at different sample rates")
    clips = [(name, audio) for name, audio, _ in results]
    voices = ", ".join(f"{v} at {w} wpm" for v, w in ESPEAK_VOICES)
    info = {"source": "espeak-ng", "licence": "Apache-2.0 (synthesised by vqkit; espeak-ng itself is GPL-3.0)",
            "origin": version, "sentences": len(SENTENCES), "unreadable": 0}
    return clips, rate, info, ESPEAK_ATTRIBUTION.format(version=version or "unknown version", voices=voices)


# ---- building ------------------------------------------------------------------------------------

def _heldout_names(clips: list[tuple[str, np.ndarray]], rate: int) -> list[str]:
    """HELDOUT_COUNT clips of 2-8 s, evenly spaced through the name-sorted eligible list."""
    lo, hi = HELDOUT_SECONDS
    return _spread([n for n, a in clips if lo <= len(a) / rate <= hi], HELDOUT_COUNT)


def _spread(items: list, k: int) -> list:
    """k items evenly spaced through `items` (all of them when there are no more than k)."""
    if len(items) <= k:
        return list(items)
    return [items[int((i + 0.5) * len(items) / k)] for i in range(k)]


def _is_complete(out_dir: Path, manifest: dict | None, source: str, limit: int | None) -> bool:
    if not manifest or manifest.get("version") != MANIFEST_VERSION or manifest.get("limit") != limit:
        return False
    if source != "auto" and manifest.get("source_kind") != source:
        return False
    files = [out_dir / "train" / n for n in manifest.get("train_files", [])]
    files += [out_dir / "heldout" / n for n in manifest.get("heldout_files", [])]
    return bool(files) and all(f.is_file() for f in files) and (out_dir / "ATTRIBUTION.txt").is_file()


def make_demo_speech(out_dir: str | Path, log: Callable[[str], None] = print, source: str = "auto",
                     limit: int | None = None) -> dict:
    """Build (or reuse) the demo speech corpus in `out_dir` and return its manifest.

    source: "auto" (Asterisk prompts if installed, else espeak-ng), "asterisk" or "espeak".
    limit: keep at most this many train clips (for quick tests); the held-out set never changes.
    Raises RuntimeError when the requested source (or, for "auto", any source) is unavailable.
    """
    out_dir = Path(out_dir)
    old = read_manifest(out_dir)
    if _is_complete(out_dir, old, source, limit):
        log(f"demo speech corpus already in {out_dir} ({old['train_count']} train, "
            f"{old['heldout_count']} held-out clips)")
        return old
    kind = _pick_source(source)
    log(f"building the demo speech corpus in {out_dir} from {kind} ...")
    clips, rate, info, attribution = (_asterisk_clips if kind == "asterisk" else _espeak_clips)(log)
    unreadable = info.pop("unreadable")

    too_short = [n for n, a in clips if len(a) / rate < MIN_SECONDS]
    no_speech = [n for n, a in clips if len(a) / rate >= MIN_SECONDS and np.abs(a).max() < SPEECH_PEAK]
    dropped = set(too_short) | set(no_speech)
    clips = [(n, a) for n, a in clips if n not in dropped]
    heldout = set(_heldout_names(clips, rate))
    train = [(n, a) for n, a in clips if n not in heldout]
    if limit is not None:
        train = _spread(train, max(0, int(limit)))  # spread, so a small subset still varies
    held = [(n, a) for n, a in clips if n in heldout]
    if not train or not held:
        raise RuntimeError(f"demo source {kind} gave too little usable speech "
                           f"({len(train)} train, {len(held)} held-out clips)")

    # Files listed by an earlier build but not by this one would otherwise linger in train/.
    if old:
        keep = {("train", n) for n, _ in train} | {("heldout", n) for n, _ in held}
        for split in ("train", "heldout"):
            for n in old.get(f"{split}_files", []):
                if (split, n) not in keep and "/" not in n and (out_dir / split / n).is_file():
                    (out_dir / split / n).unlink()
    (out_dir / "manifest.json").unlink(missing_ok=True)  # incomplete until rewritten

    writes = [(out_dir / "train" / n, a) for n, a in train] + [(out_dir / "heldout" / n, a) for n, a in held]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda w: save_wav(w[0], w[1], rate), writes))
    atomic_write(out_dir / "ATTRIBUTION.txt", attribution)

    def seconds(items):
        return round(sum(len(a) for _, a in items) / rate, 2)

    manifest = {
        "version": MANIFEST_VERSION, "source_kind": kind, **info, "sample_rate": rate, "limit": limit,
        "train_count": len(train), "heldout_count": len(held),
        "train_seconds": seconds(train), "heldout_seconds": seconds(held),
        "skipped": {"too short": len(too_short), "no speech": len(no_speech), "unreadable": unreadable},
        "heldout_files": [n for n, _ in held], "train_files": [n for n, _ in train],
    }
    # Written last, and atomically: its presence marks a complete build.
    atomic_write(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log(f"demo speech corpus: {len(train)} train clips ({manifest['train_seconds'] / 60:.1f} min), "
        f"{len(held)} held-out clips ({manifest['heldout_seconds']:.1f} s) from {kind}, in {out_dir}")
    return manifest
