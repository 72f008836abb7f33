// Minimal RIFF/WAVE reader for the host examples: 16-bit PCM or 32-bit float, mono, 16 kHz.
#pragma once

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

}  // namespace uniaudio
