// Minimal RIFF/WAVE reading and writing for the host examples: read 16-bit PCM or 32-bit float, mono, 16 kHz
// (the tokenizer hosts); write mono 32-bit float or 16-bit PCM at any rate (the decoder hosts).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace uniaudio {

inline std::vector<float> read_wav_16k_mono(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (data.size() < 12 || std::memcmp(data.data(), "RIFF", 4) || std::memcmp(data.data() + 8, "WAVE", 4))
    throw std::runtime_error(path + ": not a RIFF/WAVE file");
  uint16_t format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  size_t pos = 12;
  while (pos + 8 <= data.size()) {
    uint32_t size;
    std::memcpy(&size, data.data() + pos + 4, 4);
    const char* body = data.data() + pos + 8;
    if (pos + 8 + size > data.size()) throw std::runtime_error(path + ": truncated chunk");
    if (!std::memcmp(data.data() + pos, "fmt ", 4)) {
      std::memcpy(&format, body, 2);
      std::memcpy(&channels, body + 2, 2);
      std::memcpy(&rate, body + 4, 4);
      std::memcpy(&bits, body + 14, 2);
    } else if (!std::memcmp(data.data() + pos, "data", 4)) {
      if (channels != 1 || rate != 16000)
        throw std::runtime_error(path + ": expected mono 16 kHz, got " + std::to_string(channels) +
                                 " channel(s) at " + std::to_string(rate) + " Hz");
      std::vector<float> out;
      if (format == 1 && bits == 16) {
        out.resize(size / 2);
        for (size_t i = 0; i < out.size(); ++i) {
          int16_t s;
          std::memcpy(&s, body + 2 * i, 2);
          out[i] = s / 32768.0f;
        }
      } else if (format == 3 && bits == 32) {
        out.resize(size / 4);
        std::memcpy(out.data(), body, out.size() * 4);
      } else {
        throw std::runtime_error(path + ": expected 16-bit PCM or 32-bit float samples");
      }
      if (out.empty()) throw std::runtime_error(path + ": no samples");
      return out;
    }
    pos += 8 + size + (size & 1);
  }
  throw std::runtime_error(path + ": no data chunk");
}

// Writes mono samples as 32-bit float (WAVE_FORMAT_IEEE_FLOAT, with the fact chunk) or, with pcm16, as 16-bit PCM
// (clamped to [-1, 1], scaled by 32767 and rounded, as libsndfile / soundfile write PCM_16).
inline void write_wav(const std::string& path, const std::vector<float>& samples, uint32_t rate, bool pcm16 = false) {
  std::string out;
  auto put = [&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  auto u16 = [&put](uint16_t v) { put(&v, 2); };
  auto u32 = [&put](uint32_t v) { put(&v, 4); };
  const uint16_t bytes = pcm16 ? 2 : 4;
  const uint32_t data_size = static_cast<uint32_t>(samples.size() * bytes);
  put("RIFF", 4);
  u32(0);  // patched below
  put("WAVE", 4);
  put("fmt ", 4);
  u32(pcm16 ? 16 : 18);
  u16(pcm16 ? 1 : 3);  // PCM / IEEE float
  u16(1);
  u32(rate);
  u32(rate * bytes);
  u16(bytes);
  u16(bytes * 8);
  if (!pcm16) {
    u16(0);  // cbSize
    put("fact", 4);
    u32(4);
    u32(static_cast<uint32_t>(samples.size()));
  }
  put("data", 4);
  u32(data_size);
  for (float x : samples) {
    if (pcm16) {
      const float c = std::min(1.0f, std::max(-1.0f, x));
      u16(static_cast<uint16_t>(static_cast<int16_t>(std::lrint(c * 32767.0f))));
    } else {
      put(&x, 4);
    }
  }
  const uint32_t riff = static_cast<uint32_t>(out.size() - 8);
  std::memcpy(&out[4], &riff, 4);
  std::ofstream f(path, std::ios::binary);
  if (!f.write(out.data(), out.size())) throw std::runtime_error(path + ": cannot write");
}

}  // namespace uniaudio
