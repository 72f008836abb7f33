// Streaming token -> audio decode around the six step graphs written by
//   uniaudio-rt export torchscript-decoder --decoder DEC --out DIR    (DIR/*.pt, libtorch)
//   uniaudio-rt export onnx-decoder --decoder DEC --out DIR           (DIR/*.onnx, ONNX Runtime)
// Both write DIR/decoder.json. This header is the host loop of OrtDetokenizer
// (uniaudio_rt/decoder/onnx_export.py) in C++ with no dependency: a runtime plugs in by implementing
// Graphs::run; detokenize_torchscript.cpp and detokenize_onnxruntime.cpp do, in 60-70 lines each.
//
//   Array<T>          a dense row-major array (the state and the graphs' inputs/outputs)
//   Json              a small JSON reader (decoder.json, token lists)
//   DecoderSpec       what decoder.json says (sizes, Euler times, iSTFT window, stream sizes, graph files)
//   SplitMixRandom    the portable random stream (= SplitMixRandom in onnx_export.py)
//   StreamingDecoder  push(tokens) -> the audio that is final now; flush() -> the rest
//   decoder_host_main the command line shared by both hosts
#pragma once

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "wav_reader.h"

namespace uniaudio {

// ------------------------------------------------------------------------------------------------ arrays
template <class T>
struct Array {
  std::vector<int64_t> shape;
  std::vector<T> data;

  Array() = default;
  explicit Array(std::vector<int64_t> s, T fill = T()) : shape(std::move(s)), data(count(shape), fill) {}

  static size_t count(const std::vector<int64_t>& s) {
    size_t n = 1;
    for (int64_t d : s) n *= static_cast<size_t>(d);
    return n;
  }
  int64_t dim(size_t axis) const { return shape.at(axis); }
};

// Splits a shape around `axis`: elements before it (outer), its length, elements after it (inner).
template <class T>
void split_at(const Array<T>& a, size_t axis, size_t& outer, size_t& n, size_t& inner) {
  if (axis >= a.shape.size()) throw std::runtime_error("array axis out of range");
  outer = Array<T>::count(std::vector<int64_t>(a.shape.begin(), a.shape.begin() + axis));
  n = static_cast<size_t>(a.shape[axis]);
  inner = Array<T>::count(std::vector<int64_t>(a.shape.begin() + axis + 1, a.shape.end()));
}

// a[..., begin:end, ...] along `axis` (a copy); unlike Python, out-of-range bounds are an error.
template <class T>
Array<T> slice(const Array<T>& a, size_t axis, int64_t begin, int64_t end) {
  size_t outer, n, inner;
  split_at(a, axis, outer, n, inner);
  if (begin < 0 || begin > end || end > static_cast<int64_t>(n))
    throw std::runtime_error("slice [" + std::to_string(begin) + ", " + std::to_string(end) + ") of an axis of " +
                             std::to_string(n));
  Array<T> out;
  out.shape = a.shape;
  out.shape[axis] = end - begin;
  out.data.reserve(outer * (end - begin) * inner);
  for (size_t o = 0; o < outer; ++o) {
    auto first = a.data.begin() + (o * n + begin) * inner;
    out.data.insert(out.data.end(), first, first + (end - begin) * inner);
  }
  return out;
}

template <class T>
Array<T> slice_from(const Array<T>& a, size_t axis, int64_t begin) {
  return slice(a, axis, begin, a.dim(axis));
}

// concatenate(a, b) along `axis`; the other axes must agree.
template <class T>
Array<T> concat(const Array<T>& a, const Array<T>& b, size_t axis) {
  size_t outer, na, inner, outer_b, nb, inner_b;
  split_at(a, axis, outer, na, inner);
  split_at(b, axis, outer_b, nb, inner_b);
  for (size_t i = 0; i < a.shape.size(); ++i)
    if (i != axis && (b.shape.size() != a.shape.size() || a.shape[i] != b.shape[i]))
      throw std::runtime_error("concat: shapes differ off the concatenation axis");
  Array<T> out;
  out.shape = a.shape;
  out.shape[axis] = static_cast<int64_t>(na + nb);
  out.data.reserve(a.data.size() + b.data.size());
  for (size_t o = 0; o < outer; ++o) {
    out.data.insert(out.data.end(), a.data.begin() + o * na * inner, a.data.begin() + (o + 1) * na * inner);
    out.data.insert(out.data.end(), b.data.begin() + o * nb * inner, b.data.begin() + (o + 1) * nb * inner);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ JSON
// Objects, arrays, numbers, strings (ASCII escapes), true/false/null: enough for decoder.json and token lists.
class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  static Json parse(const std::string& text) {
    size_t pos = 0;
    Json v = value(text, pos);
    skip(text, pos);
    if (pos != text.size()) fail(pos, "trailing characters");
    return v;
  }

  Kind kind() const { return kind_; }
  bool has(const std::string& key) const { return kind_ == Kind::Object && find(key) != nullptr; }
  const Json& operator[](const std::string& key) const {
    const Json* v = kind_ == Kind::Object ? find(key) : nullptr;
    if (!v) throw std::runtime_error("JSON: no key \"" + key + "\"");
    return *v;
  }
  const std::vector<Json>& items() const {
    expect(Kind::Array, "an array");
    return array_;
  }
  double number() const {
    expect(Kind::Number, "a number");
    return number_;
  }
  int64_t integer() const {
    double v = number();
    if (v != std::floor(v)) throw std::runtime_error("JSON: expected an integer, got " + std::to_string(v));
    return static_cast<int64_t>(v);
  }
  const std::string& str() const {
    expect(Kind::String, "a string");
    return string_;
  }

 private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Json> array_;
  std::vector<std::pair<std::string, Json>> object_;

  const Json* find(const std::string& key) const {
    for (const auto& [k, v] : object_)
      if (k == key) return &v;
    return nullptr;
  }
  void expect(Kind k, const char* what) const {
    if (kind_ != k) throw std::runtime_error(std::string("JSON: expected ") + what);
  }
  [[noreturn]] static void fail(size_t pos, const std::string& why) {
    throw std::runtime_error("JSON: " + why + " at offset " + std::to_string(pos));
  }
  static void skip(const std::string& t, size_t& pos) {
    while (pos < t.size() && std::isspace(static_cast<unsigned char>(t[pos]))) ++pos;
  }
  static bool literal(const std::string& t, size_t& pos, const char* word) {
    const size_t n = std::char_traits<char>::length(word);
    if (t.compare(pos, n, word) != 0) return false;
    pos += n;
    return true;
  }
  static std::string string_at(const std::string& t, size_t& pos) {
    std::string out;
    for (++pos; pos < t.size() && t[pos] != '"'; ++pos) {
      char c = t[pos];
      if (c == '\\') {
        if (++pos >= t.size()) break;
        switch (t[pos]) {
          case 'n': c = '\n'; break;
          case 't': c = '\t'; break;
          case 'r': c = '\r'; break;
          case 'b': c = '\b'; break;
          case 'f': c = '\f'; break;
          case 'u': c = '?', pos += 4; break;  // non-ASCII code points are not needed here
          default: c = t[pos];                  // \" \\ \/
        }
      }
      out += c;
    }
    if (pos >= t.size()) fail(pos, "unterminated string");
    ++pos;
    return out;
  }
  static Json value(const std::string& t, size_t& pos) {
    skip(t, pos);
    if (pos >= t.size()) fail(pos, "unexpected end");
    Json v;
    const char c = t[pos];
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      v.kind_ = c == '{' ? Kind::Object : Kind::Array;
      ++pos;
      skip(t, pos);
      if (pos < t.size() && t[pos] == close) return ++pos, v;
      while (true) {
        skip(t, pos);
        if (v.kind_ == Kind::Object) {
          if (pos >= t.size() || t[pos] != '"') fail(pos, "expected a key");
          std::string key = string_at(t, pos);
          skip(t, pos);
          if (pos >= t.size() || t[pos] != ':') fail(pos, "expected ':'");
          ++pos;
          v.object_.emplace_back(std::move(key), value(t, pos));
        } else {
          v.array_.push_back(value(t, pos));
        }
        skip(t, pos);
        if (pos < t.size() && t[pos] == ',') { ++pos; continue; }
        if (pos < t.size() && t[pos] == close) { ++pos; return v; }
        fail(pos, "expected ',' or a closing bracket");
      }
    }
    if (c == '"') {
      v.kind_ = Kind::String;
      v.string_ = string_at(t, pos);
    } else if (literal(t, pos, "true")) {
      v.kind_ = Kind::Bool;
      v.bool_ = true;
    } else if (literal(t, pos, "false")) {
      v.kind_ = Kind::Bool;
    } else if (literal(t, pos, "null")) {
      v.kind_ = Kind::Null;
    } else {
      const char* start = t.c_str() + pos;
      char* end = nullptr;
      v.number_ = std::strtod(start, &end);
      if (end == start) fail(pos, "unexpected character");
      v.kind_ = Kind::Number;
      pos += end - start;
    }
    return v;
  }
};

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// ------------------------------------------------------------------------------------------------ decoder.json
struct StreamSizes {
  int64_t prompt_tokens, encoder_left_blocks, hift_left, hift_lookahead;
};

struct GraphFile {
  std::string path;
  std::vector<std::string> inputs, outputs;
};

struct DecoderSpec {
  int64_t sample_rate, mel_bins, vocab_size, spk_embed_dim;
  double token_rate, mel_sample_rate, hop_length;
  int64_t layers, heads, head_dim, block_size, encoder_size;  // encoder
  std::vector<float> t_span;                    // Euler times 0 = t_0 < ... < t_n = 1
  float temperature;
  int64_t upsample_factor, n_fft, hop, harmonics;
  float audio_limit;
  std::vector<float> window;                    // iSTFT synthesis window (n_fft)
  StreamSizes stream;
  std::map<std::string, GraphFile> graphs;

  // Reads DIR/decoder.json; `format` is the one the host's runtime reads.
  static DecoderSpec load(const std::string& dir, const std::string& format) {
    const std::string path = dir + "/decoder.json";
    const Json j = Json::parse(read_text(path));
    if (!j.has("format") || j["format"].str() != format)
      throw std::runtime_error(path + ": format is not " + format);
    DecoderSpec s;
    s.sample_rate = j["sample_rate"].integer();
    s.mel_bins = j["mel_bins"].integer();
    s.vocab_size = j["vocab_size"].integer();
    s.spk_embed_dim = j["spk_embed_dim"].integer();
    s.token_rate = j["token_rate"].number();
    s.mel_sample_rate = j["mel_sample_rate"].number();
    s.hop_length = j["hop_length"].number();
    const Json& e = j["encoder"];
    s.layers = e["layers"].integer();
    s.heads = e["heads"].integer();
    s.head_dim = e["head_dim"].integer();
    s.block_size = e["block_size"].integer();
    s.encoder_size = e["output_size"].integer();
    for (const Json& t : j["flow"]["t_span"].items()) s.t_span.push_back(static_cast<float>(t.number()));
    s.temperature = static_cast<float>(j["flow"]["temperature"].number());
    const Json& h = j["hift"];
    s.upsample_factor = h["upsample_factor"].integer();
    s.n_fft = h["n_fft"].integer();
    s.hop = h["hop"].integer();
    s.harmonics = h["harmonics"].integer();
    s.audio_limit = static_cast<float>(h["audio_limit"].number());
    for (const Json& w : h["window"].items()) s.window.push_back(static_cast<float>(w.number()));
    const Json& st = j["stream"];
    s.stream = {st["prompt_tokens"].integer(), st["encoder_left_blocks"].integer(), st["hift_left"].integer(),
                st["hift_lookahead"].integer()};
    for (const char* name : {"flow_encoder", "flow_condition", "flow_estimator", "hift_f0", "hift_source", "hift_decode"}) {
      const Json& g = j["graphs"][name];
      GraphFile f{dir + "/" + g["file"].str(), {}, {}};
      for (const Json& n : g["inputs"].items()) f.inputs.push_back(n.str());
      for (const Json& n : g["outputs"].items()) f.outputs.push_back(n.str());
      s.graphs[name] = f;
    }
    if (s.t_span.size() < 2 || static_cast<int64_t>(s.window.size()) != s.n_fft || s.upsample_factor % s.hop)
      throw std::runtime_error(path + ": inconsistent sizes");
    return s;
  }

  // Mel frames of the first n tokens, as the Python side: int(n / token_rate * mel_sample_rate / hop_length).
  int64_t mel_frames(int64_t n_tokens) const {
    return static_cast<int64_t>(static_cast<double>(n_tokens) / token_rate * mel_sample_rate / hop_length);
  }
};

// ------------------------------------------------------------------------------------------------ runtime + randomness
using Tensor = std::variant<Array<float>, Array<double>, Array<int64_t>>;

// One step graph call: inputs and outputs in decoder.json's order ("graphs": {name: {inputs, outputs}}).
struct Graphs {
  virtual ~Graphs() = default;
  virtual std::vector<Tensor> run(const std::string& name, std::vector<Tensor> inputs) = 0;
};

// The stream's random draws, in the order of OrtDetokenizer.stream (NumpyRandom / TorchRandom / SplitMixRandom).
struct Random {
  virtual ~Random() = default;
  virtual Array<double> uniform(const std::vector<int64_t>& shape) = 0;  // float64 in [0, 1)
  virtual Array<float> normal(const std::vector<int64_t>& shape) = 0;    // float32 N(0, 1)
};

// Word k (k = 1, 2, ...) is splitmix64(seed + k * golden); uniform = top 53 bits / 2^53; normal = Box-Muller
// on two consecutive uniforms in float64, rounded to float32. Identical to onnx_export.SplitMixRandom.
class SplitMixRandom : public Random {
 public:
  explicit SplitMixRandom(uint64_t seed) : seed_(seed) {}

  Array<double> uniform(const std::vector<int64_t>& shape) override {
    Array<double> a(shape);
    for (double& v : a.data) v = next_uniform();
    return a;
  }
  Array<float> normal(const std::vector<int64_t>& shape) override {
    Array<float> a(shape);
    for (float& v : a.data) {
      const double u1 = next_uniform(), u2 = next_uniform();
      v = static_cast<float>(std::sqrt(-2.0 * std::log1p(-u1)) * std::cos(2.0 * 3.141592653589793 * u2));
    }
    return a;
  }

 private:
  uint64_t seed_, count_ = 0;

  double next_uniform() {
    uint64_t z = seed_ + (++count_) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  }
};

// Windowed iSTFT frames (B, F, n_fft) -> audio, with the overlap tail (B, n_fft - hop) carried between calls and
// the window-square normalisation of torch.istft(center=True): onnx_export.overlap_add, operation for operation.
inline Array<float> overlap_add(const Array<float>& frames, const std::vector<float>& window, int64_t hop,
                                Array<float>& tail, int64_t frames_before, bool is_last) {
  const int64_t n_fft = static_cast<int64_t>(window.size()), b = frames.dim(0), n = frames.dim(1);
  const int64_t len = n * hop + n_fft - hop, total = frames_before + n;
  const int64_t start = std::max(frames_before * hop, n_fft / 2);
  const int64_t end = std::max(start, is_last ? (total - 1) * hop + n_fft / 2 : total * hop);
  std::vector<float> env(end - start, 0.0f);
  for (int64_t p = start; p < end; ++p) {
    for (int64_t j = 0; j < (n_fft + hop - 1) / hop; ++j) {  // the frames that cover sample p
      const int64_t f = p / hop - j, off = p - f * hop;
      const float w = window[std::min(off, n_fft - 1)];
      env[p - start] = env[p - start] + ((f >= 0 && f < total && off < n_fft) ? w * w : 0.0f);
    }
  }
  Array<float> audio({b, end - start}), new_tail({b, n_fft - hop});
  std::vector<float> buf(len);
  for (int64_t r = 0; r < b; ++r) {
    std::fill(buf.begin(), buf.end(), 0.0f);
    for (int64_t i = 0; i < n_fft - hop; ++i) buf[i] += tail.data[r * (n_fft - hop) + i];
    for (int64_t f = 0; f < n; ++f)
      for (int64_t i = 0; i < n_fft; ++i) buf[f * hop + i] += frames.data[(r * n + f) * n_fft + i];
    for (int64_t p = start; p < end; ++p) {
      const float e = env[p - start];
      audio.data[r * (end - start) + p - start] = e > 1e-11f ? buf[p - frames_before * hop] / std::max(e, 1e-11f) : 0.0f;
    }
    std::copy(buf.begin() + n * hop, buf.end(), new_tail.data.begin() + r * (n_fft - hop));
  }
  tail = std::move(new_tail);
  return audio;
}

// ------------------------------------------------------------------------------------------------ the stream
// Detokenizer.stream / OrtDetokenizer.stream for one batch of B rows: all state is held here, bounded by the
// stream sizes. The random draws happen in OrtDetokenizer's order: the NSF start phases here, then per step
// the flow noise and the NSF noise of the settled and of the provisional frames.
class StreamingDecoder {
 public:
  // embedding: (B, spk_embed_dim) speaker embedding (zeros for none).
  StreamingDecoder(const DecoderSpec& spec, Graphs& graphs, Random& rng, Array<float> embedding)
      : s_(spec), g_(graphs), rng_(rng), embedding_(std::move(embedding)) {
    if (embedding_.shape.size() != 2 || embedding_.dim(1) != s_.spk_embed_dim)
      throw std::runtime_error("speaker embedding must be (batch, " + std::to_string(s_.spk_embed_dim) + ")");
    const int64_t b = embedding_.dim(0), h = s_.harmonics;
    pending_ = Array<int64_t>({b, 0});
    k_ = v_ = Array<float>({s_.layers, b, s_.heads, 0, s_.head_dim});
    h_ = Array<float>({b, 0, s_.encoder_size});
    flow_mel_ = voc_mel_ = Array<float>({b, s_.mel_bins, 0});
    source_ = Array<float>({b, 1, 0});
    phase_ = Array<double>({b, h});
    phase_offset_ = rng_.uniform({b, h});  // uniform in [-pi, pi), the fundamental's 0
    for (int64_t r = 0; r < b; ++r)
      for (int64_t i = 0; i < h; ++i) {
        double& o = phase_offset_.data[r * h + i];
        o = i == 0 ? 0.0 : (o * 2 - 1) * 3.141592653589793;
      }
    tail_ = Array<float>({b, s_.n_fft - s_.hop});
  }

  // tokens (B, n) -> audio (B, samples) that is final now (possibly none).
  Array<float> push(const Array<int64_t>& tokens) {
    if (tokens.shape.size() != 2 || tokens.dim(0) != pending_.dim(0))
      throw std::runtime_error("token chunk must be (" + std::to_string(pending_.dim(0)) + ", n)");
    for (int64_t t : tokens.data)
      if (t < 0 || t >= s_.vocab_size)
        throw std::runtime_error("token ids must be in [0, " + std::to_string(s_.vocab_size) + "), got " +
                                 std::to_string(t));
    return vocoder_step(flow_step(tokens, false), false);
  }

  // End of the stream: the pending tokens and the lookahead frames.
  Array<float> flush() { return vocoder_step(flow_step(Array<int64_t>({pending_.dim(0), 0}), true), true); }

 private:
  const DecoderSpec& s_;
  Graphs& g_;
  Random& rng_;
  Array<float> embedding_;
  // flow: tokens of an incomplete block, caches (L, B, H, C, d), prompt window (h rows and mel frames)
  Array<int64_t> pending_;
  int64_t n_tokens_ = 0, window_start_ = 0;
  Array<float> k_, v_, h_, flow_mel_;
  // vocoder: mel and NSF source from ctx_start on, NSF phase, iSTFT tail
  Array<float> voc_mel_, source_, tail_;
  int64_t ctx_start_ = 0, emitted_ = 0, frames_ = 0;
  Array<double> phase_, phase_offset_;

  static Array<float> f32(Tensor& t) { return std::move(std::get<Array<float>>(t)); }

  Array<float> flow_step(const Array<int64_t>& chunk, bool final) {
    const int64_t b = pending_.dim(0), block = s_.block_size;
    Array<int64_t> tokens = concat(pending_, chunk, 1);
    const int64_t n = tokens.dim(1), n_ready = final ? n : n / block * block;
    if (n_ready == 0) {
      pending_ = tokens;
      return Array<float>({b, s_.mel_bins, 0});
    }
    auto enc = g_.run("flow_encoder", {slice(tokens, 1, 0, n_ready), k_, v_});
    const int64_t keep = s_.stream.encoder_left_blocks * block;
    k_ = f32(enc[1]);
    v_ = f32(enc[2]);
    k_ = slice_from(k_, 3, std::max<int64_t>(0, k_.dim(3) - keep));
    v_ = slice_from(v_, 3, std::max<int64_t>(0, v_.dim(3) - keep));
    Array<float> h = concat(h_, f32(enc[0]), 1);
    const int64_t n_total = n_tokens_ + n_ready, n_prompt = flow_mel_.dim(2);
    const int64_t n_new = s_.mel_frames(n_total) - s_.mel_frames(n_tokens_);
    Array<float> cond = concat(flow_mel_, Array<float>({b, s_.mel_bins, n_new}), 2);
    auto c = g_.run("flow_condition", {h, cond, embedding_});
    Array<float> mu = f32(c[0]), spks = f32(c[1]);
    Array<float> x = rng_.normal(mu.shape);
    for (float& v : x.data) v *= s_.temperature;
    for (size_t i = 1; i < s_.t_span.size(); ++i) {
      const float t = s_.t_span[i - 1], dt = s_.t_span[i] - s_.t_span[i - 1];
      auto out = g_.run("flow_estimator", {x, mu, cond, spks, Array<float>({1}, t), Array<float>({1}, dt)});
      x = f32(out[0]);
    }
    Array<float> mel = slice_from(x, 2, n_prompt);
    // slide the prompt window to the last prompt_tokens tokens
    const int64_t start = std::max(window_start_, n_total - s_.stream.prompt_tokens);
    const int64_t drop = s_.mel_frames(start) - s_.mel_frames(window_start_);
    h_ = slice_from(h, 1, start - window_start_);
    flow_mel_ = slice_from(concat(flow_mel_, mel, 2), 2, drop);
    pending_ = slice_from(tokens, 1, n_ready);
    n_tokens_ = n_total;
    window_start_ = start;
    return mel;
  }

  // NSF source of f0 (B, n) after `phase`: (source (B, 1, n * up), phase after it). Draws the noise even for n = 0.
  std::pair<Array<float>, Array<double>> source(const Array<float>& f0, const Array<double>& phase) {
    const int64_t b = f0.dim(0), n = f0.dim(1);
    Array<float> noise = rng_.normal({b, s_.harmonics, n * s_.upsample_factor});
    if (n == 0) return {Array<float>({b, 1, 0}), phase};
    auto out = g_.run("hift_source", {f0, phase, phase_offset_, noise});
    return {f32(out[0]), std::move(std::get<Array<double>>(out[1]))};
  }

  Array<float> vocoder_step(const Array<float>& mel, bool final) {
    const int64_t up = s_.upsample_factor, per_frame = up / s_.hop;
    Array<float> mel_all = concat(voc_mel_, mel, 2);
    const int64_t b = mel_all.dim(0), total = ctx_start_ + mel_all.dim(2);
    const int64_t settled = final ? total : std::max(emitted_, total - s_.stream.hift_lookahead);
    if (total == 0 || (settled == emitted_ && !final)) {
      voc_mel_ = std::move(mel_all);
      return Array<float>({b, 0});
    }
    const int64_t w0 = std::max(ctx_start_, emitted_ - s_.stream.hift_left);
    Array<float> window = slice_from(mel_all, 2, w0 - ctx_start_);
    Array<float> f0 = f32(g_.run("hift_f0", {window})[0]);
    const int64_t e = emitted_ - w0, s = settled - w0;
    auto [src_new, phase] = source(slice(f0, 1, e, s), phase_);
    auto src_right = source(slice_from(f0, 1, s), phase).first;  // provisional, not kept
    Array<float> src = concat(concat(slice_from(source_, 2, (w0 - ctx_start_) * up), src_new, 2), src_right, 2);
    Array<float> frames = f32(g_.run("hift_decode", {window, src})[0]);
    const int64_t k0 = e * per_frame, k1 = s * per_frame + (final ? 1 : 0);
    Array<float> audio = overlap_add(slice(frames, 1, k0, k1), s_.window, s_.hop, tail_, frames_, final);
    const int64_t ctx = std::max(ctx_start_, settled - s_.stream.hift_left);
    source_ = slice_from(concat(source_, src_new, 2), 2, (ctx - ctx_start_) * up);
    voc_mel_ = slice_from(mel_all, 2, ctx - ctx_start_);
    ctx_start_ = ctx;
    emitted_ = settled;
    phase_ = std::move(phase);
    frames_ += k1 - k0;
    for (float& v : audio.data) v = std::clamp(v, -s_.audio_limit, s_.audio_limit);
    return audio;
  }
};

// ------------------------------------------------------------------------------------------------ command line
struct HostOptions {
  std::string dir, tokens, output, rng = "splitmix", embedding;
  int64_t chunk = 25, seed = 0, threads = 0;
  std::vector<int64_t> cuts;
  bool pcm16 = false;
  std::map<std::string, int64_t> stream;  // overrides of decoder.json's "stream" sizes
};

inline const char* kHostUsage =
    " DIR TOKENS OUT.wav [options]\n"
    "  DIR       export directory (decoder.json + the six graphs)\n"
    "  TOKENS    JSON file: a token list [1, 2, ...] or {\"tokens\": [...]} (tokenize_torchscript's output)\n"
    "  OUT.wav   mono float32 WAV at the decoder's rate (16-bit PCM with --pcm16)\n"
    "options:\n"
    "  --chunk N            tokens per push (default 25)\n"
    "  --cuts A,B,...       push tokens [0, A), [A, B), ... instead; the last cut is the token count\n"
    "  --seed S             random seed (default 0)\n"
    "  --rng NAME           splitmix (default: = onnx_export.SplitMixRandom(S)); the TorchScript host also has\n"
    "                       torch (= torch.Generator().manual_seed(S), i.e. Detokenizer.stream's draws)\n"
    "  --embedding FILE     speaker embedding, raw float32 (spk_embed_dim values); default zeros\n"
    "  --threads N          runtime threads (default: the runtime's choice)\n"
    "  --prompt-tokens N, --encoder-left-blocks N, --hift-left N, --hift-lookahead N\n"
    "                       override decoder.json's stream sizes\n"
    "  --pcm16              write 16-bit PCM instead of float\n"
    "Prints {\"samples\", \"sample_rate\", \"chunks\" (samples per push), \"audio_s\", \"compute_s\", \"rtf\"} as JSON.\n";

inline HostOptions parse_host_options(int argc, char** argv) {
  HostOptions o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--chunk") o.chunk = std::stoll(value());
    else if (a == "--seed") o.seed = std::stoll(value());
    else if (a == "--rng") o.rng = value();
    else if (a == "--embedding") o.embedding = value();
    else if (a == "--threads") o.threads = std::stoll(value());
    else if (a == "--pcm16") o.pcm16 = true;
    else if (a == "--cuts") {
      std::stringstream ss(value());
      for (std::string c; std::getline(ss, c, ',');) o.cuts.push_back(std::stoll(c));
    } else if (a == "--prompt-tokens" || a == "--encoder-left-blocks" || a == "--hift-left" || a == "--hift-lookahead") {
      std::string key = a.substr(2);
      std::replace(key.begin(), key.end(), '-', '_');
      o.stream[key] = std::stoll(value());
      if (o.stream[key] < 0) throw std::invalid_argument(a + " must be >= 0");
    } else if (a.rfind("--", 0) == 0) throw std::invalid_argument("unknown option " + a);
    else positional.push_back(a);
  }
  if (positional.size() != 3) throw std::invalid_argument("expected DIR TOKENS OUT.wav");
  o.dir = positional[0], o.tokens = positional[1], o.output = positional[2];
  if (o.chunk < 1) throw std::invalid_argument("--chunk must be >= 1");
  return o;
}

inline std::vector<int64_t> read_tokens(const std::string& path) {
  Json j = Json::parse(read_text(path));
  const Json& list = j.kind() == Json::Kind::Object ? j["tokens"] : j;
  std::vector<int64_t> tokens;
  for (const Json& t : list.items()) tokens.push_back(t.integer());
  if (tokens.empty()) throw std::runtime_error(path + ": no tokens");
  return tokens;
}

// The host program: `format` is the decoder.json format the runtime reads, `make_graphs` loads the six graphs,
// `make_random` returns the runtime's own random stream for --rng (nullptr: unknown name).
inline int decoder_host_main(int argc, char** argv, const std::string& format,
                             const std::function<std::unique_ptr<Graphs>(const DecoderSpec&, const HostOptions&)>& make_graphs,
                             const std::function<std::unique_ptr<Random>(const HostOptions&)>& make_random) {
  HostOptions o;
  try {
    o = parse_host_options(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\nusage: " << argv[0] << kHostUsage;
    return 2;
  }
  try {
    DecoderSpec spec = DecoderSpec::load(o.dir, format);
    for (const auto& [key, v] : o.stream) {
      if (key == "prompt_tokens") spec.stream.prompt_tokens = v;
      if (key == "encoder_left_blocks") spec.stream.encoder_left_blocks = v;
      if (key == "hift_left") spec.stream.hift_left = v;
      if (key == "hift_lookahead") spec.stream.hift_lookahead = v;
    }
    const std::vector<int64_t> tokens = read_tokens(o.tokens);
    std::vector<int64_t> cuts = o.cuts;
    if (cuts.empty())
      for (int64_t c = o.chunk; c < static_cast<int64_t>(tokens.size()) + o.chunk; c += o.chunk)
        cuts.push_back(std::min<int64_t>(c, tokens.size()));
    if (cuts.back() != static_cast<int64_t>(tokens.size()) || !std::is_sorted(cuts.begin(), cuts.end()) || cuts[0] < 0)
      throw std::runtime_error("--cuts must be increasing and end at the token count (" + std::to_string(tokens.size()) + ")");
    Array<float> embedding({1, spec.spk_embed_dim});
    if (!o.embedding.empty()) {
      const std::string raw = read_text(o.embedding);
      if (raw.size() != embedding.data.size() * sizeof(float))
        throw std::runtime_error(o.embedding + ": expected " + std::to_string(spec.spk_embed_dim) + " float32 values");
      std::memcpy(embedding.data.data(), raw.data(), raw.size());
    }
    std::unique_ptr<Random> rng = o.rng == "splitmix" ? std::make_unique<SplitMixRandom>(o.seed) : make_random(o);
    if (!rng) throw std::runtime_error("unknown --rng " + o.rng);
    std::unique_ptr<Graphs> graphs = make_graphs(spec, o);

    const auto t0 = std::chrono::steady_clock::now();
    StreamingDecoder decoder(spec, *graphs, *rng, std::move(embedding));
    std::vector<float> wav;
    std::vector<int64_t> chunks;
    auto take = [&](const Array<float>& audio) {  // row 0 of (1, n)
      if (audio.dim(1)) chunks.push_back(audio.dim(1));
      wav.insert(wav.end(), audio.data.begin(), audio.data.end());
    };
    int64_t begin = 0;
    for (int64_t cut : cuts) {
      Array<int64_t> chunk({1, cut - begin});
      std::copy(tokens.begin() + begin, tokens.begin() + cut, chunk.data.begin());
      take(decoder.push(chunk));
      begin = cut;
    }
    take(decoder.flush());
    const double compute = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_wav(o.output, wav, static_cast<uint32_t>(spec.sample_rate), o.pcm16);

    const double audio_s = static_cast<double>(wav.size()) / spec.sample_rate;
    std::printf("{\"samples\": %zu, \"sample_rate\": %lld, \"chunks\": [", wav.size(), (long long)spec.sample_rate);
    for (size_t i = 0; i < chunks.size(); ++i) std::printf(i ? ", %lld" : "%lld", (long long)chunks[i]);
    std::printf("], \"audio_s\": %.6f, \"compute_s\": %.6f, \"rtf\": %.6f}\n", audio_s, compute,
                audio_s > 0 ? compute / audio_s : 0.0);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace uniaudio
