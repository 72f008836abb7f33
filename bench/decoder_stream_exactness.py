"""HiFT (public sizes, random weights): receptive field in mel frames, and the streamed waveform vs the
one-shot one for several vocoder context sizes (Detokenizer.vocoder_step, NSF noise off).

    PYTHONPATH=. python bench/decoder_stream_exactness.py
"""

import torch

from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig
from uniaudio_rt.decoder.detokenizer import Detokenizer, StreamConfig
from uniaudio_rt.decoder.flow import FlowDecoder
from uniaudio_rt.decoder.hift import HiFTGenerator


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    hift = HiFTGenerator(HiFTConfig()).eval()
    up = hift.cfg.upsample_factor

    t, centre = 64, 32
    mel = torch.randn(1, 80, t) * 0.5
    a, _ = hift.inference(mel, generator=torch.Generator().manual_seed(1), add_noise=False)
    bumped = mel.clone()
    bumped[:, :, centre] += 1.0
    b, _ = hift.inference(bumped, generator=torch.Generator().manual_seed(1), add_noise=False)
    diff = (a - b).abs().view(t, up).amax(1)
    for thr in (0.0, 1e-6):
        idx = (diff > thr).nonzero().flatten()
        print(f"a change at mel frame {centre} reaches frames {idx.min().item()}..{idx.max().item()} (|diff| > {thr})")

    flow = FlowDecoder(FlowConfig.tiny())  # not used: the vocoder half only
    mel = torch.randn(1, 80, 90) * 0.5
    one, _ = hift.inference(mel, generator=torch.Generator().manual_seed(1), add_noise=False)
    print(f"{'left':>5s} {'lookahead':>9s} {'max |stream - one-shot|':>24s}")
    for left, ahead in [(14, 14), (10, 10), (6, 6)]:
        det = Detokenizer.__new__(Detokenizer)
        det.flow, det.hift, det.stream_config = flow, hift, StreamConfig(hift_left=left, hift_lookahead=ahead)
        state = det.vocoder_state(1, torch.Generator().manual_seed(1))
        parts, lo = [], 0
        for hi in [7, 30, 31, 55, 90]:
            wav, state = det.vocoder_step(state, mel[:, :, lo:hi], add_noise=False)
            parts.append(wav)
            lo = hi
        wav, state = det.vocoder_step(state, mel[:, :, :0], final=True, add_noise=False)
        parts.append(wav)
        print(f"{left:5d} {ahead:9d} {(torch.cat(parts, -1) - one).abs().max().item():24.2e}")


if __name__ == "__main__":
    main()
