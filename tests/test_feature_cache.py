"""The frozen-front feature cache when runs share a corpus: two processes that need the same cache
at once build it once (the second waits on the lock) and read the same frames."""

import os
import subprocess
import sys

import numpy as np
from conftest import make_model

SCRIPT = r"""
import os, sys, time
import numpy as np
import torch
from uniaudio_rt.checkpoint import load_encoder
from uniaudio_rt.train.features import build_cache

torch.set_num_threads(1)
model_dir, cache_dir, work, me = sys.argv[1:5]
model = load_encoder(model_dir).eval()
clips = [{"id": f"clip{i}", "md5": str(i)} for i in range(6)]

def load_audio(clip):
    with open(os.path.join(work, "loads.txt"), "a") as f:
        f.write(f"{me} {clip['id']}\n")
    time.sleep(0.2)                       # long enough for the other process to arrive meanwhile
    rng = np.random.default_rng(int(clip["md5"]))
    return rng.standard_normal(16000 + 800 * int(clip["md5"])).astype(np.float32) * 0.1

open(os.path.join(work, f"ready-{me}"), "w").close()
while not all(os.path.exists(os.path.join(work, f"ready-{p}")) for p in ("a", "b")):
    time.sleep(0.01)
cache = build_cache(model, 1, clips, load_audio, cache_dir, progress=False)
np.save(os.path.join(work, f"frames-{me}.npy"), np.asarray(cache.frames))
"""


def test_concurrent_builds_share_one_cache(tmp_path):
    from uniaudio_rt.checkpoint import save_pretrained

    model_dir = str(tmp_path / "model")
    save_pretrained(make_model(pooling_position=3), model_dir)   # 50 Hz frames before the pooling, as trained
    work = tmp_path / "work"
    work.mkdir()
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, model_dir, str(cache_dir), str(work), me],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for me in ("a", "b")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    loads = (work / "loads.txt").read_text().split("\n")[:-1]
    assert len(loads) == 6, loads                                  # each clip read once, by one process
    assert len({line.split()[0] for line in loads}) == 1
    a, b = np.load(work / "frames-a.npy"), np.load(work / "frames-b.npy")
    assert a.shape[0] > 0 and np.array_equal(a, b)
    (entry,) = os.listdir(cache_dir)
    assert not [n for n in os.listdir(cache_dir / entry) if n.endswith(".tmp")]
