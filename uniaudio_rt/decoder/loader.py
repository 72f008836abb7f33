"""Load the public decoder checkpoints (``config.yaml``, ``flow.pt``, ``hift.pt``) without running their code.

* ``read_config`` parses the HyperPyYAML file with ``yaml.SafeLoader``; ``!new:pkg.Class`` /
  ``!name:pkg.fn`` / ``!apply:pkg.fn`` nodes become plain data (``{"__class__": "pkg.Class", ...}``),
  ``!ref <key>`` is resolved against the file's own top-level keys. Nothing is imported or called.
* ``prepare_state_dict`` maps both key spellings of HiFT (``conv_pre/conv_post/m_source`` and
  ``pre_conv/post_conv/source``) and folds weight norm (``weight_g/weight_v`` or
  ``parametrizations.weight.original0/1``) into plain ``weight`` tensors.
* ``load_into`` is a strict ``load_state_dict`` whose error names every missing / unexpected key and
  shape mismatch.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

import torch
import yaml
from torch import Tensor, nn

from .config import FlowConfig, HiFTConfig


# ----------------------------------------------------------------------------- config.yaml
class _Ref(str):
    """A ``!ref <key>`` value, resolved after loading."""


class _SafeHyperLoader(yaml.SafeLoader):
    pass


def _tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node, kind: str):
    if isinstance(node, yaml.MappingNode):
        data = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        data = {"__args__": loader.construct_sequence(node, deep=True)}
    else:
        value = loader.construct_scalar(node)
        data = {"__args__": [value]} if value not in ("", None) else {}
    return {kind: tag_suffix, **data}


for _prefix, _kind in (("!new:", "__class__"), ("!name:", "__name__"), ("!apply:", "__apply__")):
    _SafeHyperLoader.add_multi_constructor(_prefix, lambda l, s, n, k=_kind: _tagged(l, s, n, k))
_SafeHyperLoader.add_constructor("!ref", lambda l, n: _Ref(l.construct_scalar(n)))
_SafeHyperLoader.add_constructor("!copy", lambda l, n: _Ref(l.construct_scalar(n)))
# any other tag: keep the data, drop the tag
_SafeHyperLoader.add_multi_constructor("!", lambda l, s, n: _tagged(l, s, n, "__tag__"))
_SafeHyperLoader.add_multi_constructor("tag:", lambda l, s, n: _tagged(l, s, n, "__tag__"))


def _resolve(value: Any, top: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, _Ref):
        m = re.fullmatch(r"\s*<([^<>\[\]]+)((?:\[[^\]]+\])*)>\s*", value)
        if not m:
            raise ValueError(f"config.yaml {path}: only plain '!ref <key>' references are supported, got {value!r}")
        key, subs = m.group(1), re.findall(r"\[([^\]]+)\]", m.group(2))
        if key not in top:
            raise ValueError(f"config.yaml {path}: '!ref <{key}>' names no top-level key")
        out = top[key]
        for s in subs:
            out = out[s.strip("'\"")]
        return _resolve(out, top, path)
    if isinstance(value, dict):
        return {k: _resolve(v, top, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, top, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def read_config(path_or_text: str) -> dict:
    """Parse a HyperPyYAML config as data (safe: no object is constructed, no module imported)."""
    text = path_or_text
    if "\n" not in path_or_text and os.path.exists(path_or_text):
        with open(path_or_text, encoding="utf-8") as f:
            text = f.read()
    data = yaml.load(text, Loader=_SafeHyperLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"config.yaml must hold a mapping at the top level, got {type(data).__name__}")
    return _resolve(data, data, "")


def flow_config_from_yaml(cfg: Mapping[str, Any]) -> FlowConfig:
    if "flow" not in cfg:
        raise ValueError(f"config.yaml has no 'flow' node (top-level keys: {sorted(cfg)})")
    flow = dict(cfg["flow"])
    enc = dict(flow.get("encoder", {}))
    for k in ("macaron_style", "use_cnn_module"):
        if enc.get(k):
            raise ValueError(f"flow.encoder.{k}={enc[k]} is not supported (the public decoders use False)")
    if enc.get("input_layer", "linear") != "linear" or enc.get("pos_enc_layer_type", "rel_pos_espnet") != "rel_pos_espnet":
        raise ValueError(f"flow.encoder input_layer={enc.get('input_layer')!r} / pos_enc_layer_type="
                         f"{enc.get('pos_enc_layer_type')!r} not supported (expected 'linear' / 'rel_pos_espnet')")
    if enc.get("activation_type", "swish") != "swish":
        raise ValueError(f"flow.encoder activation_type={enc['activation_type']!r} is not supported (expected 'swish')")
    block = "Block" in str(enc.get("__class__", "")) or enc.get("selfattention_layer_type") == "block_rel_selfattn"
    if not block:
        enc["block_size"] = 0  # plain ConformerEncoder: full attention
    flow["encoder"] = enc
    return FlowConfig.from_yaml_dict(flow, sample_rate=int(cfg.get("sample_rate", 22050)))


def hift_config_from_yaml(cfg: Mapping[str, Any]) -> HiFTConfig:
    if "hift" not in cfg:
        raise ValueError(f"config.yaml has no 'hift' node (top-level keys: {sorted(cfg)})")
    return HiFTConfig.from_yaml_dict(cfg["hift"])


# ----------------------------------------------------------------------------- state dicts
HIFT_KEY_PREFIXES = {"pre_conv.": "conv_pre.", "post_conv.": "conv_post.", "source.": "m_source.",
                     "source_module.": "m_source."}


def fold_weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """weight = g * v / ||v||, the norm taken over every dim where g has size 1 (torch weight_norm)."""
    if g.dim() != v.dim():
        raise ValueError(f"weight-norm g {tuple(g.shape)} and v {tuple(v.shape)} differ in rank")
    dims = [i for i in range(v.dim()) if g.shape[i] == 1]
    norm = v.float().pow(2).sum(dim=dims, keepdim=True).sqrt() if dims else v.float().abs()
    return (g.float() * v.float() / norm).to(v.dtype)


def prepare_state_dict(state: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
    """Checkpoint state dict -> the keys of FlowDecoder (kind='flow') or HiFTGenerator (kind='hift')."""
    if kind not in ("flow", "hift"):
        raise ValueError(f"kind must be 'flow' or 'hift', got {kind!r}")
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        if key.startswith("module."):
            key = key[len("module."):]
        if kind == "hift" and key == "stft_window":
            continue  # a fixed Hann window, rebuilt by the module (some exports save it)
        if kind == "hift":
            for old, new in HIFT_KEY_PREFIXES.items():
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
        for suffix, part in ((".weight_g", "g"), (".weight_v", "v"), (".parametrizations.weight.original0", "g"),
                             (".parametrizations.weight.original1", "v")):
            if key.endswith(suffix):
                pending.setdefault(key[: -len(suffix)], {})[part] = value
                break
        else:
            if key in out:
                raise ValueError(f"checkpoint key {key!r} occurs twice after mapping the HiFT spellings")
            out[key] = value
    for base, parts in pending.items():
        if set(parts) != {"g", "v"}:
            raise ValueError(f"weight norm of {base!r} is incomplete: has {sorted(parts)}, needs g and v")
        out[base + ".weight"] = fold_weight_norm(parts["g"], parts["v"])
    return out


def load_into(module: nn.Module, state: Mapping[str, Tensor], what: str = "checkpoint") -> None:
    """Strict load with an error that lists missing / unexpected keys and shape mismatches."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def show(items):
            return ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
        lines = [f"{what} does not fit {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys: {show(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {show(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches: {show(shapes)}")
        raise ValueError("\n".join(lines))
    module.load_state_dict(dict(state), strict=True)


def _torch_load(path: str) -> Mapping[str, Tensor]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_flow(model_dir: str, config: Optional[dict] = None):
    from .flow import FlowDecoder

    cfg = config if config is not None else read_config(os.path.join(model_dir, "config.yaml"))
    flow = FlowDecoder(flow_config_from_yaml(cfg))
    load_into(flow, prepare_state_dict(_torch_load(os.path.join(model_dir, "flow.pt")), "flow"), "flow.pt")
    return flow.eval()


def load_hift(model_dir: str, config: Optional[dict] = None):
    from .hift import HiFTGenerator

    cfg = config if config is not None else read_config(os.path.join(model_dir, "config.yaml"))
    hift = HiFTGenerator(hift_config_from_yaml(cfg))
    load_into(hift, prepare_state_dict(_torch_load(os.path.join(model_dir, "hift.pt")), "hift"), "hift.pt")
    return hift.eval()


def load_decoder(model_dir: str):
    """(FlowDecoder, HiFTGenerator) from a directory with config.yaml, flow.pt and hift.pt."""
    cfg = read_config(os.path.join(model_dir, "config.yaml"))
    return load_flow(model_dir, cfg), load_hift(model_dir, cfg)


# ----------------------------------------------------------------------------- writing a decoder directory
def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def config_to_yaml_dict(flow: FlowConfig, hift: HiFTConfig) -> dict:
    """The inverse of ``flow_config_from_yaml`` / ``hift_config_from_yaml``: a config.yaml mapping in
    the public layout (plain data, no ``!new:`` tags) that ``read_config`` and both readers accept."""
    enc, lr, cfm, est = flow.encoder, flow.length_regulator, flow.cfm, flow.estimator
    encoder = {"input_size": enc.input_size, "output_size": enc.output_size, "attention_heads": enc.attention_heads,
               "linear_units": enc.linear_units, "num_blocks": enc.num_blocks, "normalize_before": enc.normalize_before,
               "input_layer": "linear", "pos_enc_layer_type": "rel_pos_espnet",
               "selfattention_layer_type": "block_rel_selfattn" if enc.block_size > 0 else "rel_selfattn",
               "block_size": enc.block_size, "key_bias": enc.key_bias, "use_cnn_module": False,
               "macaron_style": False, "activation_type": "swish"}
    length_regulator = {"channels": lr.channels, "sampling_ratios": lr.sampling_ratios, "groups": lr.groups}
    if lr.out_channels is not None:
        length_regulator["out_channels"] = lr.out_channels
    decoder = {"in_channels": cfm.in_channels, "n_spks": cfm.n_spks, "spk_emb_dim": cfm.spk_emb_dim,
               "cfm_params": {"sigma_min": cfm.sigma_min, "solver": "euler", "t_scheduler": cfm.t_scheduler,
                              "inference_cfg_rate": cfm.inference_cfg_rate, "n_timesteps": cfm.n_timesteps},
               "estimator": {"in_channels": est.in_channels, "out_channels": est.out_channels,
                             "channels": est.channels, "attention_head_dim": est.attention_head_dim,
                             "n_blocks": est.n_blocks, "num_mid_blocks": est.num_mid_blocks,
                             "num_heads": est.num_heads, "act_fn": est.act_fn}}
    flow_node = {"input_size": flow.input_size, "output_size": flow.output_size, "spk_embed_dim": flow.spk_embed_dim,
                 "output_type": "mel", "vocab_size": flow.vocab_size, "input_frame_rate": flow.input_frame_rate,
                 "encoder": encoder, "length_regulator": length_regulator, "decoder": decoder}
    hift_node = {f: getattr(hift, f) for f in ("in_channels", "base_channels", "nb_harmonics", "sampling_rate",
                                                "nsf_alpha", "nsf_sigma", "nsf_voiced_threshold", "upsample_rates",
                                                "upsample_kernel_sizes", "istft_params", "resblock_kernel_sizes",
                                                "resblock_dilation_sizes", "source_resblock_kernel_sizes",
                                                "source_resblock_dilation_sizes", "lrelu_slope", "audio_limit")}
    hift_node["f0_predictor"] = {"num_class": hift.f0_predictor.num_class, "in_channels": hift.f0_predictor.in_channels,
                                 "cond_channels": hift.f0_predictor.cond_channels}
    return _plain({"sample_rate": flow.sample_rate, "flow": flow_node, "hift": hift_node})


def save_decoder(model_dir: str, flow: nn.Module, hift: nn.Module, dtype: torch.dtype = torch.float16,
                 header: str = "") -> dict[str, int]:
    """Write ``config.yaml``, ``flow.pt`` and ``hift.pt`` (state dicts in ``dtype``; ``load_decoder`` loads
    them into float32 modules). Files are written under temporary names and renamed. Returns file sizes."""
    if flow.cfg.sample_rate != hift.cfg.sampling_rate:
        raise ValueError(f"flow works at {flow.cfg.sample_rate} Hz, HiFT at {hift.cfg.sampling_rate} Hz")
    os.makedirs(model_dir, exist_ok=True)
    text = yaml.safe_dump(config_to_yaml_dict(flow.cfg, hift.cfg), sort_keys=False)
    sizes = {}
    for name, payload in (("config.yaml", header + text), ("flow.pt", flow), ("hift.pt", hift)):
        path = os.path.join(model_dir, name)
        if isinstance(payload, str):
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(payload)
        else:
            sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                  for k, v in payload.state_dict().items()}
            torch.save(sd, path + ".tmp")
        os.replace(path + ".tmp", path)
        sizes[name] = os.path.getsize(path)
    return sizes
