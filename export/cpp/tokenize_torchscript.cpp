// Tokenize a 16 kHz mono WAV with a TorchScript tokenizer exported by
//   uniaudio-rt export torchscript --out DIR
// and print the tokens as JSON. Links only against the libtorch that the torch wheel ships.
//
//   tokenize_torchscript DIR/tokenizer_wave.pt audio.wav
//   tokenize_torchscript --mel DIR/tokenizer_mel.pt mel.f32 N_MELS FRAMES [REAL_FRAMES]
//     (a precomputed log-mel, float32 row-major; frames after REAL_FRAMES are padding)
#include <torch/script.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "wav_reader.h"

namespace {

// Reads an integer field from the uniaudio.json saved inside the module (torch.jit extra file).
int64_t json_int(const std::string& json, const std::string& key) {
  auto at = json.find("\"" + key + "\"");
  if (at == std::string::npos) throw std::runtime_error("uniaudio.json lacks " + key);
  return std::stoll(json.substr(json.find(':', at) + 1));
}

std::vector<int64_t> run(torch::jit::Module& m, const std::vector<torch::jit::IValue>& inputs) {
  auto out = m.forward(inputs).toTuple();
  auto tokens = out->elements()[0].toTensor();
  int64_t n = out->elements()[1].toTensor().item<int64_t>();
  auto row = tokens[0].slice(0, 0, n).contiguous();
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + n);
}

void print_json(const std::vector<int64_t>& tokens) {
  std::printf("{\"tokens\": [");
  for (size_t i = 0; i < tokens.size(); ++i) std::printf(i ? ", %lld" : "%lld", (long long)tokens[i]);
  std::printf("]}\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    torch::NoGradGuard no_grad;
    if ((argc == 6 || argc == 7) && std::string(argv[1]) == "--mel") {
      auto m = torch::jit::load(argv[2]);
      const int64_t n_mels = std::stoll(argv[4]), frames = std::stoll(argv[5]);
      std::vector<float> mel(n_mels * frames);
      std::ifstream f(argv[3], std::ios::binary);
      if (!f.read(reinterpret_cast<char*>(mel.data()), mel.size() * sizeof(float)))
        throw std::runtime_error(std::string(argv[3]) + ": expected " + std::to_string(mel.size()) + " float32 values");
      auto x = torch::from_blob(mel.data(), {1, n_mels, frames}, torch::kFloat32);
      const int64_t real = argc == 7 ? std::stoll(argv[6]) : frames;
      if (real < 1 || real > frames) throw std::runtime_error("REAL_FRAMES must be in 1..FRAMES");
      print_json(run(m, {x, torch::tensor({real}), torch::zeros({1}, torch::kLong)}));
      return 0;
    }
    if (argc != 3) {
      std::cerr << "usage: " << argv[0] << " tokenizer_wave.pt audio.wav\n"
                << "       " << argv[0] << " --mel tokenizer_mel.pt mel.f32 N_MELS FRAMES [REAL_FRAMES]\n";
      return 2;
    }
    torch::jit::ExtraFilesMap extra{{"uniaudio.json", ""}};
    auto m = torch::jit::load(argv[1], c10::nullopt, extra);
    const int64_t segment = json_int(extra["uniaudio.json"], "segment_samples");  // hard 30 s cuts
    const int64_t stride = json_int(extra["uniaudio.json"], "samples_per_token");
    auto wav = uniaudio::read_wav_16k_mono(argv[2]);
    std::vector<int64_t> all;
    for (size_t start = 0; start < wav.size(); start += segment) {
      const int64_t n = std::min<int64_t>(segment, wav.size() - start);
      const int64_t padded = (n + stride - 1) / stride * stride;  // rows are padded to whole tokens
      auto x = torch::zeros({1, padded}, torch::kFloat32);
      std::copy(wav.begin() + start, wav.begin() + start + n, x.data_ptr<float>());
      auto tokens = run(m, {x, torch::tensor({n})});
      all.insert(all.end(), tokens.begin(), tokens.end());
    }
    print_json(all);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
