#!/usr/bin/env python3
"""Generate earmark's accuracy evaluation set from the Debian music corpus.

Needs ffmpeg, sox and espeak-ng (scripts/setup.sh) and the corpus fetched by
scripts/fetch-corpus.sh (run automatically when missing). Python stdlib only.

Outputs (in --out, default ${EARMARK_EVAL:-~/.cache/earmark/eval}):
  refs.jsonl      one line per reference recording to register in the index
  heldout.jsonl   tracks never registered (sources of negatives / interference / carriers)
  queries.jsonl   one line per query file with its ground truth
  summary.json    counts, minutes, timing
  <run>/<condition>/<query_id>.<ext>   the query audio; <run> = q<VERSION>-s<seed>-split<split_seed>
  .work/envelopes.json                 cached 100 ms RMS envelopes of the corpus tracks

Everything is deterministic given --seed/--split-seed; files that already exist are
not regenerated, so re-runs (or runs with a larger --per-cell) are cheap.

Query JSON (queries.jsonl):
  query_id, path, condition, length_s, work_id (null for negatives),
  ref_start_s, ref_end_s       excerpt position in the reference track (seconds)
  query_start_s, query_end_s   where that excerpt lies in the query file
  speed_factor                 reference seconds per query second (1.05 for speed+5/tempo+5)
  pitch_factor                 query frequency / reference frequency
  params                       condition details (informative only)
"""
import argparse
import array
import concurrent.futures as cf
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import wave

try:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # C speed for RMS; gone in Python 3.13 (pure-Python fallback below)
except ImportError:  # pragma: no cover
    audioop = None

VERSION = 1
SR = 22050
BLOCK = SR // 10  # 100 ms envelope blocks
SILENCE_DBFS = -45.0
MIN_REF_S = 30.0
SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))

WES_DIR = "usr/share/games/wesnoth/1.16/data/core/music"
FOF_DIR = "usr/share/games/fretsonfire/data/songs"
# The "unseen" part of the corpus (scripts/fetch-corpus.sh --unseen): music from
# three more games, never used to tune earmark. family -> music directory.
UNSEEN_DIRS = {
    "colobot": "usr/share/games/colobot/music",
    "freedroidrpg": "usr/share/freedroidrpg/data/sound/music",
    "hedgewars": "usr/share/games/hedgewars/Data/Music",
}
# Tracks of the unseen part that hold the same recording (found by the hash
# stage, not the deep search: long stretches at speed 1 and pitch 1, scores
# 18-66): each stays on the side of the split of the track it names.
UNSEEN_SAME_MUSIC = {
    "freedroidrpg-techbattle": "freedroidrpg-ambientbattle",
    "freedroidrpg-hellfortressentrance": "freedroidrpg-hellfortresstwo",
    "colobot-music008": "colobot-infinite",
}
UNSEEN_PACKAGES = {"colobot": "colobot-common-sounds", "freedroidrpg": "freedroidrpg-data",
                   "hedgewars": "hedgewars-data"}

# Recorded human speech (codec2-examples, LGPL-2.1: David Rowe's codec test
# recordings, several male and female speakers, 8 kHz, about 4 min). Recordings
# with a continuous noise floor (david4, vk2tpm_004: radio hiss) or already
# coded (f2400, m2400) are left out.
RECORDED_SPEECH_DIR = "usr/share/codec2/wav"
RECORDED_SPEECH_PACKAGE = "codec2-examples"
RECORDED_SPEECH = ["all", "big_dog", "cross", "forig", "hts1a", "hts2a", "mmt1", "morig",
                   "ve9qrp", "vk5qi"]
# Utterances cut from the recordings (seconds) and the pauses between them.
VOICE_PIECE_S = (1.5, 6.0)
VOICE_PAUSE_S = (0.1, 0.6)

SEMITONE = 2.0 ** (1.0 / 12.0)

# name -> spec. speed = reference seconds per query second, pitch = query f / reference f
CONDITIONS = {
    "clean": dict(kind="plain"),
    "white-snr10": dict(kind="noise", color="white", snr=10),
    "white-snr5": dict(kind="noise", color="white", snr=5),
    "white-snr0": dict(kind="noise", color="white", snr=0),
    "pink-snr10": dict(kind="noise", color="pink", snr=10),
    "pink-snr5": dict(kind="noise", color="pink", snr=5),
    "pink-snr0": dict(kind="noise", color="pink", snr=0),
    "mp3-64k": dict(kind="codec", ext="mp3", args=["-c:a", "libmp3lame", "-b:a", "64k"]),
    "aac-64k": dict(kind="codec", ext="m4a", args=["-c:a", "aac", "-b:a", "64k"]),
    "opus-32k": dict(kind="codec", ext="opus", args=["-c:a", "libopus", "-b:a", "32k", "-ar", "48000"],
                     encoder="libopus"),
    "speed+5": dict(kind="sox", fx=["speed", "1.05"], speed=1.05, pitch=1.05),
    "speed-5": dict(kind="sox", fx=["speed", "0.95"], speed=0.95, pitch=0.95),
    "speed+10": dict(kind="sox", fx=["speed", "1.10"], speed=1.10, pitch=1.10),
    "speed-10": dict(kind="sox", fx=["speed", "0.90"], speed=0.90, pitch=0.90),
    "tempo+5": dict(kind="sox", fx=["tempo", "-m", "1.05"], speed=1.05, pitch=1.0),
    "tempo-5": dict(kind="sox", fx=["tempo", "-m", "0.95"], speed=0.95, pitch=1.0),
    "pitch+1": dict(kind="sox", fx=["pitch", "100"], speed=1.0, pitch=SEMITONE),
    "pitch-1": dict(kind="sox", fx=["pitch", "-100"], speed=1.0, pitch=1.0 / SEMITONE),
    "reverb": dict(kind="sox", fx=["reverb", "50"], speed=1.0, pitch=1.0),
    "mix-6db": dict(kind="mix", interference_db=6.0),
    "embedded60": dict(kind="embed", carrier_s=60.0, fade_s=0.05),
    # Music as a bed under a voice: espeak-ng speech over the whole excerpt, the
    # music this many dB below the speech (RMS over the excerpt).
    "speech-10db": dict(kind="speechbed", music_db=-10.0),
    "speech-15db": dict(kind="speechbed", music_db=-15.0),
    "speech-20db": dict(kind="speechbed", music_db=-20.0),
    # The same with recorded human speech (RECORDED_SPEECH) instead of espeak-ng.
    "voice-10db": dict(kind="voicebed", music_db=-10.0),
    "voice-15db": dict(kind="voicebed", music_db=-15.0),
    "voice-20db": dict(kind="voicebed", music_db=-20.0),
    # Heavy speed changes ("nightcore" re-uploads and slowed versions).
    "speed+25": dict(kind="sox", fx=["speed", "1.25"], speed=1.25, pitch=1.25),
    "speed-25": dict(kind="sox", fx=["speed", "0.75"], speed=0.75, pitch=0.75),
    "tempo+20": dict(kind="sox", fx=["tempo", "-m", "1.20"], speed=1.20, pitch=1.0),
    "tempo-20": dict(kind="sox", fx=["tempo", "-m", "0.80"], speed=0.80, pitch=1.0),
}
DEFAULT_CONDITIONS = list(CONDITIONS)

# Stress conditions beyond the targets (generated only when named in
# --conditions): larger pitch and tempo changes, telephone band.
CONDITIONS.update({
    "pitch+2": dict(kind="sox", fx=["pitch", "200"], speed=1.0, pitch=SEMITONE ** 2),
    "pitch-2": dict(kind="sox", fx=["pitch", "-200"], speed=1.0, pitch=SEMITONE ** -2),
    "tempo+10": dict(kind="sox", fx=["tempo", "-m", "1.10"], speed=1.10, pitch=1.0),
    "tempo-10": dict(kind="sox", fx=["tempo", "-m", "0.90"], speed=0.90, pitch=1.0),
    "phone": dict(kind="sox", fx=["highpass", "300", "lowpass", "3400"], speed=1.0, pitch=1.0),
    "mix-3db": dict(kind="mix", interference_db=3.0),
})

# ---------------------------------------------------------------- speech text
WORDS = {
    "en": ("the river morning garden quiet window yellow market little ancient bridge "
           "station music letter summer winter travel silver forest mountain paper "
           "kitchen doctor lantern harbour evening careful gentle number simple second "
           "answer ticket village orange engine minute yesterday tomorrow always never "
           "often because before after under over between every another nothing "
           "people weather history picture machine language reason island coffee "
           "walk read carry open close remember follow listen speak write build").split(),
    "de": ("der die das und ist nicht ein eine morgen abend garten fenster strasse "
           "stadt wasser brot zeitung bahnhof wetter sommer winter bruder schwester "
           "arbeit schule freund immer heute gestern schnell langsam gross klein "
           "vielleicht deshalb aber oder wenn weil zwischen unter neben lampe tisch "
           "buch frage antwort geschichte sprache maschine kaffee insel wald berg "
           "gehen lesen schreiben sprechen bauen denken finden").split(),
    "fr": ("le la les un une et est pas matin soir jardin fenetre rue ville eau pain "
           "journal gare temps ete hiver frere soeur travail ecole ami toujours "
           "aujourd'hui hier vite lentement grand petit peut-etre donc mais ou quand "
           "parce que entre sous pres lampe table livre question reponse histoire "
           "langue machine cafe ile foret montagne aller lire ecrire parler construire "
           "penser trouver").split(),
}
VOICES = [("en", "en"), ("en-us", "en"), ("de", "de"), ("fr", "fr")]
VARIANTS = ["", "+m3", "+f2", "+f4", "+m1", "+klatt"]


def make_text(rng, lang, n_words):
    words = WORDS[lang]
    out, left = [], n_words
    while left > 0:
        k = min(left, rng.randint(5, 12))
        s = " ".join(rng.choice(words) for _ in range(k))
        out.append(s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!"]))
        left -= k
    return " ".join(out)


def speech_params(rng, seconds):
    voice, lang = rng.choice(VOICES)
    wpm = rng.randint(120, 200)
    return dict(voice=voice + rng.choice(VARIANTS), wpm=wpm, pitch=rng.randint(25, 75),
                gap=rng.randint(0, 8),
                text=make_text(rng, lang, int(seconds * wpm / 60.0 * 1.3) + 8))


def voice_params(rng, seconds, speech):
    """A voice track of recorded utterances: pieces of random recordings, short pauses between."""
    pieces, t = [], 0.0
    while t < seconds:
        rec = rng.choices(speech, weights=[r["duration_s"] for r in speech])[0]
        length = min(rng.uniform(*VOICE_PIECE_S), rec["duration_s"])
        start = round(rng.uniform(0.0, rec["duration_s"] - length), 3)
        pause = round(rng.uniform(*VOICE_PAUSE_S), 3)
        pieces.append(dict(path=rec["path"], start_s=start, length_s=round(length, 3), pause_s=pause))
        t += length + pause
    return dict(pieces=pieces)


def recorded_voice(p, seconds):
    x = []
    for piece in p["pieces"]:
        x.extend(decode_mono(piece["path"], piece["start_s"], piece["length_s"]))
        x.extend([0.0] * int(round(piece["pause_s"] * SR)))
    n = int(round(seconds * SR))
    x = x[:n]
    x.extend([0.0] * (n - len(x)))
    return x


def list_recorded_speech(corpus):
    d = os.path.join(corpus, "root", RECORDED_SPEECH_DIR)
    out = []
    for name in RECORDED_SPEECH:
        path = os.path.join(d, name + ".wav")
        if os.path.isfile(path):  # some are mu-law: sox reads them, the wave module does not
            secs = subprocess.run(["soxi", "-D", path], stdout=subprocess.PIPE, check=True, text=True).stdout
            out.append(dict(path=path, duration_s=float(secs)))
    return out


def ensure_recorded_speech(corpus):
    if len(list_recorded_speech(corpus)) < len(RECORDED_SPEECH):
        print("make-eval-set: recorded speech missing; running fetch-corpus.sh", file=sys.stderr)
        subprocess.run([os.path.join(SCRIPT_DIR, "fetch-corpus.sh")], check=True,
                       env=dict(os.environ, EARMARK_CORPUS=corpus))
    speech = list_recorded_speech(corpus)
    if len(speech) < len(RECORDED_SPEECH):
        sys.exit("make-eval-set: recorded speech (%s) not found under %s"
                 % (RECORDED_SPEECH_PACKAGE, os.path.join(corpus, "root", RECORDED_SPEECH_DIR)))
    return speech


# ---------------------------------------------------------------- corpus
def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def list_corpus(corpus, part="main"):
    root = os.path.join(corpus, "root")
    tracks = []
    if part == "unseen":
        for fam, rel in sorted(UNSEEN_DIRS.items()):
            d = os.path.join(root, rel)
            if not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                if f.endswith(".ogg"):
                    stem = f[:-4]
                    work_id = "%s-%s" % (fam, slug(stem))
                    group = UNSEEN_SAME_MUSIC.get(work_id, work_id)
                    tracks.append(dict(path=os.path.join(d, f), package=UNSEEN_PACKAGES[fam],
                                       work_id=work_id, group="%s:%s" % (fam, group)))
        tracks.sort(key=lambda t: t["path"])
        return tracks
    wes = os.path.join(root, WES_DIR)
    if os.path.isdir(wes):
        for f in sorted(os.listdir(wes)):
            if f.endswith(".ogg"):
                stem = f[:-4]
                tracks.append(dict(path=os.path.join(wes, f), package="wesnoth-1.16-music",
                                   work_id="wesnoth-" + slug(stem),
                                   # variants of one piece (battle / battle-epic, frantic /
                                   # frantic-old, defeat / defeat2) stay on one side of the split
                                   group="wesnoth:" + re.sub(r"(-old|-epic|\d+)$", "", stem)))
    fof = os.path.join(root, FOF_DIR)
    if os.path.isdir(fof):
        for band in sorted(os.listdir(fof)):
            bdir = os.path.join(fof, band)
            if not os.path.isdir(bdir):
                continue
            for song in sorted(os.listdir(bdir)):
                p = os.path.join(bdir, song, "song.ogg")  # backing mix; guitar.ogg is a stem
                if os.path.isfile(p):
                    tracks.append(dict(path=p, package="fretsonfire-songs-" + band,
                                       work_id="fof-%s-%s" % (slug(band), slug(song)),
                                       group="fof:%s/%s" % (band, song)))
    tracks.sort(key=lambda t: t["path"])
    return tracks


def ensure_corpus(corpus, part="main"):
    if not list_corpus(corpus, part):
        print("make-eval-set: corpus missing; running fetch-corpus.sh", file=sys.stderr)
        env = dict(os.environ, EARMARK_CORPUS=corpus)
        flags = ["--unseen"] if part == "unseen" else []
        subprocess.run([os.path.join(SCRIPT_DIR, "fetch-corpus.sh")] + flags, check=True, env=env)
    tracks = list_corpus(corpus, part)
    if not tracks:
        sys.exit("make-eval-set: no %s tracks found under %s" % (part, corpus))
    return tracks


def rms_int16(buf):
    if audioop is not None:
        return audioop.rms(buf, 2)
    a = array.array("h")
    a.frombytes(buf)
    return int(math.sqrt(sum(x * x for x in a) / len(a))) if a else 0


def envelope_job(path):
    """Decode a track to mono 22050 Hz and return (n_samples, 100 ms RMS list)."""
    p = subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-ac", "1", "-ar", str(SR),
                          "-f", "s16le", "-"], stdout=subprocess.PIPE)
    env, n = [], 0
    while True:
        buf = p.stdout.read(BLOCK * 2)
        if not buf:
            break
        n += len(buf) // 2
        env.append(rms_int16(buf))
    if p.wait() != 0:
        raise RuntimeError("ffmpeg failed decoding " + path)
    return path, n, env


def load_envelopes(tracks, workdir, jobs):
    cache_path = os.path.join(workdir, "envelopes.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)

    def key(t):
        st = os.stat(t["path"])
        return "%s|%d|%d" % (t["path"], st.st_size, int(st.st_mtime))

    todo = [t["path"] for t in tracks if key(t) not in cache]
    if todo:
        print("make-eval-set: measuring %d tracks" % len(todo), file=sys.stderr)
        with cf.ProcessPoolExecutor(max_workers=jobs) as ex:
            for path, n, env in ex.map(envelope_job, todo):
                t = next(t for t in tracks if t["path"] == path)
                cache[key(t)] = dict(n=n, env=env)
        os.makedirs(workdir, exist_ok=True)
        tmp = cache_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, cache_path)
    for t in tracks:
        c = cache[key(t)]
        t["duration_s"] = round(c["n"] / SR, 3)
        t["env"] = c["env"]


def split_tracks(tracks, split_seed):
    """~80% of the piece-groups of each package family become references."""
    refs, held = [], []
    for fam in sorted({t["group"].split(":")[0] for t in tracks}):
        ft = [t for t in tracks if t["group"].startswith(fam + ":")]
        groups = sorted({t["group"] for t in ft})
        eligible = [g for g in groups if any(t["duration_s"] >= MIN_REF_S for t in ft if t["group"] == g)]
        rng = random.Random("%s:split:%s" % (split_seed, fam))
        rng.shuffle(eligible)
        n_hold = max(1, round(0.2 * len(eligible))) if len(eligible) > 1 else 0
        held_groups = set(eligible[:n_hold])
        for t in ft:
            if t["group"] in held_groups or t["duration_s"] < MIN_REF_S:
                held.append(t)
            else:
                refs.append(t)
    refs.sort(key=lambda t: t["path"])
    held.sort(key=lambda t: t["path"])
    return refs, held


def dbfs(rms):
    return 20.0 * math.log10(max(rms, 1e-9) / 32768.0)


def segment_ok(t, start, length):
    """Not mostly silent: overall RMS >= -45 dBFS and at most half the 100 ms blocks below it."""
    env = t["env"]
    a, b = int(start * 10), int(math.ceil((start + length) * 10))
    blk = env[a:b]
    if not blk:
        return False
    ms = sum(r * r for r in blk) / len(blk)
    thr = 32768.0 * 10 ** (SILENCE_DBFS / 20.0)
    quiet = sum(1 for r in blk if r < thr)
    return dbfs(math.sqrt(ms)) >= SILENCE_DBFS and quiet <= len(blk) / 2


def pick_segment(rng, pool, length, tries=200):
    cands = [t for t in pool if t["duration_s"] >= length + 0.2]
    if not cands:
        raise RuntimeError("no track long enough for a %.1f s segment" % length)
    for _ in range(tries):
        t = rng.choice(cands)
        start = round(rng.uniform(0.0, t["duration_s"] - length - 0.1), 3)
        if segment_ok(t, start, length):
            return t, start
    raise RuntimeError("could not find a non-silent %.1f s segment" % length)


# ---------------------------------------------------------------- planning
def plan_queries(refs, held, conditions, lengths, per_cell, seed, qdir, speech=None):
    jobs = []
    for cond in conditions:
        spec = CONDITIONS[cond]
        for L in lengths:
            rng = random.Random("%s:%s:%s" % (seed, cond, L))
            for i in range(per_cell):
                t, start = pick_segment(rng, refs, L)
                qid = "%s-%02ds-%04d" % (cond, L, i)
                ext = spec.get("ext", "flac")
                speed, pitch = spec.get("speed", 1.0), spec.get("pitch", 1.0)
                job = dict(query_id=qid, condition=cond, kind=spec["kind"], length_s=L,
                           work_id=t["work_id"], src=t["path"], ref_start_s=start,
                           ref_end_s=round(start + L, 3), query_start_s=0.0,
                           query_end_s=round(L / speed, 4), speed_factor=speed, pitch_factor=pitch,
                           path=os.path.join(qdir, cond, qid + "." + ext), params={},
                           noise_seed=rng.getrandbits(32))
                if spec["kind"] == "noise":
                    job["params"] = dict(noise=spec["color"], snr_db=spec["snr"])
                elif spec["kind"] == "codec":
                    job["params"] = dict(ffmpeg=spec["args"])
                elif spec["kind"] == "sox":
                    job["params"] = dict(sox=spec["fx"])
                elif spec["kind"] == "mix":
                    it, istart = pick_segment(rng, held, L)
                    job["params"] = dict(interference=it["work_id"], interference_path=it["path"],
                                         interference_start_s=istart,
                                         interference_db=spec["interference_db"])
                elif spec["kind"] == "speechbed":
                    job["params"] = dict(speech=speech_params(rng, L), music_db=spec["music_db"])
                elif spec["kind"] == "voicebed":
                    job["params"] = dict(voice=voice_params(rng, L, speech), music_db=spec["music_db"])
                elif spec["kind"] == "embed":
                    total = spec["carrier_s"]
                    pos = round(rng.uniform(0.0, total - L), 3)
                    job["query_start_s"], job["query_end_s"] = pos, round(pos + L, 3)
                    gain = round(rng.uniform(-6.0, 0.0), 2)
                    if rng.random() < 0.5:
                        ct, cstart = pick_segment(rng, held, total)
                        carrier = dict(type="music", work=ct["work_id"], path=ct["path"], start_s=cstart)
                    else:
                        carrier = dict(type="speech", **speech_params(rng, total))
                    job["params"] = dict(carrier=carrier, carrier_gain_db=gain, total_s=total,
                                         fade_s=spec["fade_s"])
                jobs.append(job)
    return jobs


# Shares of the negative minutes per kind. The default keeps the main set's
# negatives as they are; NEGATIVE_SHARES_WITH_SPEECHBED adds speech over
# unregistered music (for --negatives-from unseen).
NEGATIVE_SHARES = [("negative-music", 0.4), ("negative-speech", 0.35), ("negative-noise", 0.25)]
NEGATIVE_SHARES_WITH_SPEECHBED = [("negative-music", 0.35), ("negative-speech", 0.2),
                                  ("negative-speechbed", 0.3), ("negative-noise", 0.15)]
# Unregistered music under the speech of a negative-speechbed query (dB, RMS).
NEGATIVE_SPEECHBED_DB = (-20.0, -5.0)


def plan_negatives(held, minutes, seed, qdir, shares=NEGATIVE_SHARES):
    jobs = []
    total = minutes * 60.0
    for cond, share in shares:
        rng = random.Random("%s:%s" % (seed, cond))
        target, acc, i = total * share, 0.0, 0
        while acc < target - 1e-6:
            L = round(rng.uniform(10.0, 60.0), 1)
            qid = "%s-%04d" % (cond, i)
            job = dict(query_id=qid, condition=cond, kind=cond, length_s=L, work_id=None,
                       src=None, ref_start_s=None, ref_end_s=None, query_start_s=None,
                       query_end_s=None, speed_factor=1.0, pitch_factor=1.0,
                       path=os.path.join(qdir, cond, qid + ".flac"), noise_seed=rng.getrandbits(32))
            if cond == "negative-music":
                t, start = pick_segment(rng, held, L)
                job["src"] = t["path"]
                job["params"] = dict(source=t["work_id"], source_start_s=start)
                job["src_start_s"] = start
            elif cond == "negative-speech":
                job["params"] = speech_params(rng, L)
            elif cond == "negative-speechbed":
                t, start = pick_segment(rng, held, L)
                job["src"] = t["path"]
                job["src_start_s"] = start
                job["params"] = dict(source=t["work_id"], source_start_s=start,
                                     speech=speech_params(rng, L),
                                     music_db=round(rng.uniform(*NEGATIVE_SPEECHBED_DB), 1))
            else:
                kind = rng.choice(["white", "pink", "brown", "hum"])
                p = dict(noise=kind, level_dbfs=round(rng.uniform(-40.0, -12.0), 1))
                if kind == "hum":
                    p["hum_hz"] = rng.choice([50, 60])
                    p["level_dbfs"] = round(rng.uniform(-50.0, -30.0), 1)
                    p["floor_dbfs"] = round(rng.uniform(-75.0, -60.0), 1)
                job["params"] = p
            jobs.append(job)
            acc += L
            i += 1
    return jobs


# ---------------------------------------------------------------- audio helpers (workers)
def cut_cmd(path, start, length, fmt_args):
    # sox trim seeks sample-accurately in Ogg/Vorbis (libvorbisfile); ffmpeg's input
    # seeking (-ss before -i) on these files lands up to ~15 ms off, so it is not used.
    return ["sox", "-V1", "-R", "-D", path] + fmt_args + ["trim", "%.4f" % start, "%.4f" % length]


def decode_raw(path, start, length):
    """[start, start+length) of a file as mono 22050 Hz s16le bytes, exactly length*SR samples."""
    n = int(round(length * SR))
    out = subprocess.run(cut_cmd(path, start, length, ["-t", "raw", "-e", "signed-integer", "-b", "16", "-"])
                         + ["remix", "-", "rate", "-v", str(SR)], stdout=subprocess.PIPE, check=True).stdout
    out = out[: 2 * n]
    return out + b"\0" * (2 * n - len(out))


def decode_mono(path, start, length):
    """Same as decode_raw, as floats in [-1, 1]."""
    a = array.array("h")
    a.frombytes(decode_raw(path, start, length))
    return [v / 32768.0 for v in a]


def rms(x):
    return math.sqrt(sum(v * v for v in x) / len(x)) if x else 0.0


def to_pcm16(x):
    peak = max((abs(v) for v in x), default=0.0)
    g = 0.98 / peak if peak > 0.98 else 1.0  # avoid clipping (gain applies to the whole mix)
    return array.array("h", [int(round(v * g * 32767.0)) for v in x]).tobytes()


def tmp_name(path):
    root, ext = os.path.splitext(path)
    return root + ".tmp" + ext


def write_raw(raw, path, sox_fx=()):
    """mono 22050 Hz s16le bytes (+ optional sox effects) -> 16-bit file (format from extension)."""
    tmp = tmp_name(path)
    cmd = ["sox", "-R", "-G", "-t", "raw", "-r", str(SR), "-e", "signed-integer", "-b", "16", "-c", "1", "-",
           "-b", "16", tmp] + list(sox_fx)
    if sox_fx:
        cmd += ["rate", "-v", str(SR)]
    subprocess.run(cmd, input=raw, check=True)
    os.replace(tmp, path)


def write_audio(x, path, sox_fx=()):
    write_raw(to_pcm16(x), path, sox_fx)


def gen_noise(color, n, seed):
    rng = random.Random(seed)
    g = rng.gauss
    if color == "white":
        return [g(0.0, 1.0) for _ in range(n)]
    if color == "pink":  # Paul Kellett's economy pink filter
        b0 = b1 = b2 = 0.0
        out = []
        for _ in range(n):
            w = g(0.0, 1.0)
            b0 = 0.99765 * b0 + w * 0.0990460
            b1 = 0.96300 * b1 + w * 0.2965164
            b2 = 0.57000 * b2 + w * 1.0526913
            out.append(b0 + b1 + b2 + w * 0.1848)
        return out
    if color == "brown":  # leaky integrator
        b, out = 0.0, []
        for _ in range(n):
            b = 0.995 * b + g(0.0, 1.0)
            out.append(b)
        m = sum(out) / n
        return [v - m for v in out]
    raise ValueError(color)


def scaled(x, target_rms):
    r = rms(x)
    k = target_rms / r if r > 0 else 0.0
    return [v * k for v in x]


def espeak(p, seconds, tmpdir, tag):
    wav = os.path.join(tmpdir, tag + ".speech.wav")
    subprocess.run(["espeak-ng", "-v", p["voice"], "-s", str(p["wpm"]), "-p", str(p["pitch"]),
                    "-g", str(p["gap"]), "-w", wav, p["text"]], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with wave.open(wav) as w:
        sr, ch, sw = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    os.unlink(wav)
    if sr != SR or ch != 1 or sw != 2:
        raw = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-r", str(SR), "-e", "signed-integer",
                              "-b", "16", "-c", "1", "-"], input=raw, stdout=subprocess.PIPE, check=True).stdout
    a = array.array("h")
    a.frombytes(raw)
    n = int(round(seconds * SR))
    x = [v / 32768.0 for v in a[:n]]
    x.extend([0.0] * (n - len(x)))
    return x


def run_job(job):
    path = job["path"]
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return job["query_id"], "skip", None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        kind, L, p = job["kind"], job["length_s"], job.get("params", {})
        if kind == "codec":  # encode from the original 44.1 kHz stereo audio
            tmp = tmp_name(path)
            cut = subprocess.run(cut_cmd(job["src"], job["ref_start_s"], L,
                                         ["-t", "raw", "-e", "signed-integer", "-b", "16", "-r", "44100", "-c", "2",
                                          "-"]), stdout=subprocess.PIPE, check=True).stdout
            subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "s16le", "-ar", "44100", "-ac", "2",
                            "-i", "-",
                            "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]
                           + p["ffmpeg"] + [tmp], input=cut, check=True)
            os.replace(tmp, path)
            return job["query_id"], "ok", None
        if kind == "plain":
            write_raw(decode_raw(job["src"], job["ref_start_s"], L), path)
            return job["query_id"], "ok", None
        if kind == "sox":
            write_raw(decode_raw(job["src"], job["ref_start_s"], L), path, p["sox"])
            return job["query_id"], "ok", None
        if kind in ("noise", "mix", "embed", "speechbed", "voicebed"):
            x = decode_mono(job["src"], job["ref_start_s"], L)
            if kind in ("speechbed", "voicebed"):
                if kind == "speechbed":
                    voice = espeak(p["speech"], L, os.path.dirname(path), job["query_id"])
                else:
                    voice = recorded_voice(p["voice"], L)
                music = scaled(x, rms(voice) * 10 ** (p["music_db"] / 20.0))
                write_audio([a + b for a, b in zip(voice, music)], path)
            if kind == "noise":
                nz = scaled(gen_noise(p["noise"], len(x), job["noise_seed"]), rms(x) / 10 ** (p["snr_db"] / 20.0))
                write_audio([a + b for a, b in zip(x, nz)], path)
            elif kind == "mix":
                y = decode_mono(p["interference_path"], p["interference_start_s"], L)
                y = scaled(y, rms(x) * 10 ** (p["interference_db"] / 20.0))
                write_audio([a + b for a, b in zip(x, y)], path)
            elif kind == "embed":
                total, c = p["total_s"], p["carrier"]
                if c["type"] == "music":
                    car = decode_mono(c["path"], c["start_s"], total)
                else:
                    car = espeak(c, total, os.path.dirname(path), job["query_id"])
                car = scaled(car, rms(x) * 10 ** (p["carrier_gain_db"] / 20.0))
                pos = int(round(job["query_start_s"] * SR))
                nf = int(p["fade_s"] * SR)
                n = len(x)
                for i in range(n):  # cross-fade carrier -> excerpt -> carrier
                    w = min(1.0, (i + 0.5) / nf, (n - i - 0.5) / nf)
                    car[pos + i] = car[pos + i] * (1.0 - w) + x[i] * w
                write_audio(car, path)
            return job["query_id"], "ok", None
        if kind == "negative-music":
            write_raw(decode_raw(job["src"], job["src_start_s"], L), path)
        elif kind == "negative-speech":
            x = espeak(p, L, os.path.dirname(path), job["query_id"])
            write_audio(x, path)
        elif kind == "negative-speechbed":
            voice = espeak(p["speech"], L, os.path.dirname(path), job["query_id"])
            x = decode_mono(job["src"], job["src_start_s"], L)
            music = scaled(x, rms(voice) * 10 ** (p["music_db"] / 20.0))
            write_audio([a + b for a, b in zip(voice, music)], path)
        elif kind == "negative-noise":
            n = int(round(L * SR))
            lvl = 10 ** (p["level_dbfs"] / 20.0)
            if p["noise"] == "hum":
                rng = random.Random(job["noise_seed"])
                f0 = p["hum_hz"]
                parts = [(1.0, rng.uniform(0, 6.283)), (0.5, rng.uniform(0, 6.283)),
                         (0.3, rng.uniform(0, 6.283)), (0.15, rng.uniform(0, 6.283))]
                w = 2.0 * math.pi * f0 / SR
                hum = [sum(a * math.sin(w * (k + 1) * i + ph) for k, (a, ph) in enumerate(parts)) for i in range(n)]
                hum = scaled(hum, lvl)
                fl = scaled(gen_noise("white", n, job["noise_seed"] + 1), 10 ** (p["floor_dbfs"] / 20.0))
                x = [a + b for a, b in zip(hum, fl)]
            else:
                x = scaled(gen_noise(p["noise"], n, job["noise_seed"]), lvl)
            write_audio(x, path)
        else:
            raise ValueError(kind)
        return job["query_id"], "ok", None
    except Exception as e:  # report, keep going
        return job["query_id"], "error", "%s: %s" % (type(e).__name__, e)


# ---------------------------------------------------------------- main
def main():
    home = os.path.expanduser("~")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("EARMARK_EVAL", os.path.join(home, ".cache/earmark/eval")))
    ap.add_argument("--corpus", default=os.environ.get("EARMARK_CORPUS", os.path.join(home, ".cache/earmark/corpus")))
    ap.add_argument("--seed", type=int, default=1, help="query sampling seed")
    ap.add_argument("--split-seed", type=int, default=1, help="reference / held-out split seed")
    ap.add_argument("--per-cell", type=int, default=100, help="queries per (condition, length)")
    ap.add_argument("--conditions", default=",".join(DEFAULT_CONDITIONS),
                    help="comma list (default: all but the stress conditions %s)"
                    % ",".join(c for c in CONDITIONS if c not in DEFAULT_CONDITIONS))
    ap.add_argument("--lengths", default="5,10")
    ap.add_argument("--negative-minutes", type=float, default=60.0)
    ap.add_argument("--part", choices=["main", "unseen"], default="main",
                    help="corpus part the references and positives come from: main (wesnoth, "
                         "fretsonfire; the tuning corpus) or unseen (colobot, freedroidrpg, hedgewars; "
                         "fetch-corpus.sh --unseen)")
    ap.add_argument("--negatives-from", choices=["heldout", "unseen"], default="heldout",
                    help="music of the negatives: the part's held-out tracks, or every track of the "
                         "unseen part (none registered in a main-part set), then with speech over "
                         "that music as a fourth kind")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    t0 = time.time()
    for tool in ("ffmpeg", "sox", "espeak-ng"):
        if not shutil.which(tool):
            sys.exit("make-eval-set: %s not found (run scripts/setup.sh)" % tool)
    conditions = [c for c in args.conditions.split(",") if c]
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        sys.exit("make-eval-set: unknown condition(s) %s; known: %s" % (",".join(bad), ",".join(CONDITIONS)))
    lengths = [int(x) for x in args.lengths.split(",") if x]
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout
    for c in list(conditions):
        enc = CONDITIONS[c].get("encoder")
        if enc and not re.search(r"\s%s\s" % re.escape(enc), encoders):
            print("make-eval-set: WARNING: ffmpeg has no %s encoder; skipping %s" % (enc, c), file=sys.stderr)
            conditions.remove(c)

    out = os.path.abspath(args.out)
    corpus = os.path.abspath(args.corpus)
    os.makedirs(out, exist_ok=True)
    tracks = ensure_corpus(corpus, args.part)
    load_envelopes(tracks, os.path.join(out, ".work"), args.jobs)
    refs, held = split_tracks(tracks, args.split_seed)
    negative_pool, shares = held, NEGATIVE_SHARES
    if args.negatives_from == "unseen":
        if args.part == "unseen":
            sys.exit("make-eval-set: --negatives-from unseen needs --part main (the unseen tracks "
                     "would be registered)")
        negative_pool = ensure_corpus(corpus, "unseen")
        load_envelopes(negative_pool, os.path.join(out, ".work"), args.jobs)
        shares = NEGATIVE_SHARES_WITH_SPEECHBED

    with open(os.path.join(out, "refs.jsonl"), "w") as f:
        for t in refs:
            f.write(json.dumps(dict(work_id=t["work_id"], path=t["path"], duration_s=t["duration_s"])) + "\n")
    with open(os.path.join(out, "heldout.jsonl"), "w") as f:
        for t in held:
            f.write(json.dumps(dict(work_id=t["work_id"], path=t["path"], duration_s=t["duration_s"])) + "\n")

    qdir = os.path.join(out, "q%d-s%d-split%d" % (VERSION, args.seed, args.split_seed))
    speech = None
    if any(CONDITIONS[c]["kind"] == "voicebed" for c in conditions):
        speech = ensure_recorded_speech(corpus)
    jobs = plan_queries(refs, held, conditions, lengths, args.per_cell, args.seed, qdir, speech)
    jobs += plan_negatives(negative_pool, args.negative_minutes, args.seed, qdir, shares)

    # run what is missing (existing files are kept)
    todo = [j for j in jobs if not (os.path.exists(j["path"]) and os.path.getsize(j["path"]) > 0)]
    print("make-eval-set: %d queries planned, %d to generate (%d jobs)" % (len(jobs), len(todo), args.jobs),
          file=sys.stderr)
    failed = {}
    if todo:
        done = 0
        with cf.ProcessPoolExecutor(max_workers=args.jobs) as ex:
            for qid, status, err in ex.map(run_job, todo, chunksize=4):
                done += 1
                if status == "error":
                    failed[qid] = err
                    print("make-eval-set: FAILED %s: %s" % (qid, err), file=sys.stderr)
                if done % 200 == 0 or done == len(todo):
                    print("make-eval-set: %d/%d (%.0f s)" % (done, len(todo), time.time() - t0), file=sys.stderr)

    keys = ["query_id", "path", "condition", "length_s", "work_id", "ref_start_s", "ref_end_s",
            "query_start_s", "query_end_s", "speed_factor", "pitch_factor", "params"]
    counts, neg_s = {}, 0.0
    with open(os.path.join(out, "queries.jsonl.tmp"), "w") as f:
        for j in jobs:
            if j["query_id"] in failed or not os.path.exists(j["path"]):
                continue
            rec = {k: j.get(k) for k in keys}
            if j["work_id"] is None:
                rec["query_start_s"] = rec["query_end_s"] = None
            f.write(json.dumps(rec) + "\n")
            counts[j["condition"]] = counts.get(j["condition"], 0) + 1
            if j["work_id"] is None:
                neg_s += j["length_s"]
    os.replace(os.path.join(out, "queries.jsonl.tmp"), os.path.join(out, "queries.jsonl"))

    hours = lambda ts: sum(t["duration_s"] for t in ts) / 3600.0
    summary = dict(version=VERSION, seed=args.seed, split_seed=args.split_seed, per_cell=args.per_cell,
                   lengths=lengths, references=len(refs), reference_hours=round(hours(refs), 3),
                   heldout=len(held), heldout_hours=round(hours(held), 3), counts=counts,
                   negative_minutes=round(neg_s / 60.0, 2), failed=len(failed),
                   seconds=round(time.time() - t0, 1), query_dir=qdir)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("references: %d tracks, %.2f h; held out: %d tracks, %.2f h" %
          (len(refs), hours(refs), len(held), hours(held)))
    for c, n in counts.items():
        print("  %-16s %5d" % (c, n))
    print("negatives: %.1f min; failed: %d; total queries: %d; time: %.0f s" %
          (neg_s / 60.0, len(failed), sum(counts.values()), time.time() - t0))
    print("wrote %s/{refs,heldout,queries}.jsonl, summary.json; audio in %s" % (out, qdir))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
