// Tokenize a 16 kHz mono WAV with the ONNX graph written by
//   uniaudio-rt export onnx --with-mel --out DIR
// using the ONNX Runtime C++ API; prints the tokens as JSON.
//
//   tokenize_onnxruntime DIR/tokenizer_wave.onnx audio.wav [samples_per_token=640]
//
// Needs ONNX Runtime's C/C++ headers and library (not shipped by any package registry; use an
// official ONNX Runtime release archive): cmake -DONNXRUNTIME_ROOT=/path/to/onnxruntime ...
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "wav_reader.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " tokenizer_wave.onnx audio.wav [samples_per_token]\n";
    return 2;
  }
  try {
    const int64_t stride = argc > 3 ? std::stoll(argv[3]) : 640;
    const int64_t segment = 30 * 16000;  // hard 30 s cuts, as the public reference
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "uniaudio-rt");
    Ort::SessionOptions opts;
    opts.SetIntraOpNumThreads(2);
    Ort::Session session(env, argv[1], opts);
    auto wav = uniaudio::read_wav_16k_mono(argv[2]);
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const char* in_names[] = {"waveform", "lengths"};
    const char* out_names[] = {"tokens", "token_lengths"};
    std::vector<int64_t> all;
    for (size_t start = 0; start < wav.size(); start += segment) {
      int64_t n = std::min<int64_t>(segment, wav.size() - start);
      int64_t padded = (n + stride - 1) / stride * stride;
      std::vector<float> row(padded, 0.0f);
      std::copy(wav.begin() + start, wav.begin() + start + n, row.begin());
      std::array<int64_t, 2> shape{1, padded};
      std::array<int64_t, 1> len_shape{1};
      Ort::Value inputs[] = {
          Ort::Value::CreateTensor<float>(mem, row.data(), row.size(), shape.data(), 2),
          Ort::Value::CreateTensor<int64_t>(mem, &n, 1, len_shape.data(), 1)};
      auto outputs = session.Run(Ort::RunOptions{nullptr}, in_names, inputs, 2, out_names, 2);
      const int64_t* tokens = outputs[0].GetTensorData<int64_t>();
      const int64_t count = outputs[1].GetTensorData<int64_t>()[0];
      all.insert(all.end(), tokens, tokens + count);
    }
    std::printf("{\"tokens\": [");
    for (size_t i = 0; i < all.size(); ++i) std::printf(i ? ", %lld" : "%lld", (long long)all[i]);
    std::printf("]}\n");
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
